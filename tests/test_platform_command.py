"""`manage.py platform` starts the web server and the DICOM receiver together, prints
where they are, and stops all of it on Ctrl-C; a child killed with SIGKILL comes back, and
the administrators' status page shows it back; a child that keeps dying at once makes the
platform give up loudly. Run as real processes on free ports, on an embedded SQLite
database of its own (the embedded default a newcomer gets), and with a private
redis-server for the worker and beat."""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def web_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def embedded_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(YUNYING_VAR_DIR=str(var_dir), DEMO_MODE="true", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded database migrated once, with an administrator; each test copies it."""
    var_dir = tmp_path_factory.mktemp("migrated")
    env = embedded_env(var_dir)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    make_admin = (
        "from facilities.models import User\n"
        "u = User(username='boss', role=User.Role.ADMINISTRATOR)\n"
        f"u.set_password({ADMIN_PASSWORD!r})\n"
        "u.save()\n"
    )
    subprocess.run([*manage, "shell", "-c", make_admin], cwd=ROOT, env=env, check=True, timeout=120)
    return var_dir / "yunying.sqlite3"


ADMIN_PASSWORD = "zhuangtai-2026"


def copy_database(migrated: Path, var_dir: Path) -> None:
    shutil.copy(migrated, var_dir / "yunying.sqlite3")


def test_the_platform_runs_web_and_dicom_and_stops_on_ctrl_c(tmp_path, migrated):
    env = embedded_env(tmp_path)
    copy_database(migrated, tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "seed_hanyin", "--no-history"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=180
    )

    web_port, dicom_port = free_port(), free_port()
    log = (tmp_path / "platform.log").open("w+")
    platform = subprocess.Popen(
        [*manage, "platform", "--web-port", str(web_port), "--dicom-port", str(dicom_port), "--web-workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(lambda: web_answers(f"http://127.0.0.1:{web_port}/accounts/login/")), Path(log.name).read_text()

        ae = AE(ae_title="XUANWO_DR")
        ae.add_requested_context(Verification)

        def echo_succeeds() -> bool:
            assoc = ae.associate("127.0.0.1", dicom_port, ae_title="CLOUDPACS")
            if not assoc.is_established:
                return False
            status = assoc.send_c_echo()
            assoc.release()
            return bool(status) and status.Status == 0x0000

        assert wait_for(echo_succeeds), Path(log.name).read_text()

        output = Path(log.name).read_text()
        assert f"http://127.0.0.1:{web_port}/" in output
        assert "CLOUDPACS" in output and str(dicom_port) in output
        assert "tech_xuanwo" in output and "xiangzhen-2025" in output

        platform.send_signal(signal.SIGINT)
        assert platform.wait(timeout=30) == 0
        assert not web_answers(f"http://127.0.0.1:{web_port}/accounts/login/")
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", dicom_port), timeout=2):
            pass
    finally:
        if platform.poll() is None:
            platform.kill()
            platform.wait()
        log.close()


# --------------------------------------------------------------- children killed and restarted


class Platform:
    """`manage.py platform` on free ports; its output (the children's too) goes to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *, dicom_port: int | None = None) -> None:
        self.web_port, self.dicom_port = free_port(), dicom_port or free_port()
        self.log_path = log_path
        self._log = log_path.open("w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "platform",
                "--web-port",
                str(self.web_port),
                "--dicom-port",
                str(self.dicom_port),
                "--web-workers",
                "1",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def pids(self) -> dict[str, int]:
        """The latest process id of each child, from the platform's own lines."""
        return {name: int(pid) for name, pid in re.findall(r"platform: (\w+) 已(?:启动|重启)（进程 (\d+)", self.log())}

    def echo_succeeds(self) -> bool:
        ae = AE(ae_title="STATUSCHECK")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title="CLOUDPACS")
        if not assoc.is_established:
            # Refused by the AE title policy still shows a receiver listening.
            return bool(assoc.is_rejected)
        assoc.release()
        return True

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


class StatusPage:
    """The administrators' status page, read over HTTP as the administrator."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.signed_in = False

    def sign_in(self) -> bool:
        try:
            form = self.opener.open(f"{self.base_url}/accounts/login/", timeout=5).read().decode()
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
            data = urllib.parse.urlencode(
                {"csrfmiddlewaretoken": token, "username": "boss", "password": ADMIN_PASSWORD}
            ).encode()
            self.opener.open(f"{self.base_url}/accounts/login/", data, timeout=5)
        except OSError:
            return False
        self.signed_in = True
        return True

    def parts(self) -> dict[str, tuple[str, int | None]]:
        """{part: (up | down | never, pid)}; empty while the web server does not answer."""
        if not self.signed_in and not self.sign_in():
            return {}
        try:
            page = self.opener.open(f"{self.base_url}/status/", timeout=10).read().decode()
        except OSError:
            return {}
        rows = re.findall(r'<tr data-part="(\w+)" data-state="(\w+)" data-pid="(\d*)"', page)
        return {part: (state, int(pid) if pid else None) for part, state, pid in rows}

    def shows_up(self, *parts: str) -> bool:
        shown = self.parts()
        return all(shown.get(part, ("", None))[0] == "up" for part in parts)


@pytest.fixture
def running(tmp_path: Path, migrated: Path) -> Iterator[list[Platform]]:
    started: list[Platform] = []
    copy_database(migrated, tmp_path)
    yield started
    for platform in started:
        platform.close()


def kill_and_see_it_come_back(platform: Platform, status: StatusPage, name: str, part: str) -> None:
    """SIGKILL the child, then wait for the platform to start it again and for the status
    page to show the part running in a new process."""
    before = platform.pids()[name]
    shown_before = status.parts()[part][1]
    os.kill(before, signal.SIGKILL)
    assert wait_for(lambda: platform.pids()[name] != before, 60), platform.log()
    assert re.search(rf"platform: {name} 已退出（代码 -9", platform.log()), platform.log()

    def back() -> bool:
        state, pid = status.parts().get(part, ("", None))
        return state == "up" and pid not in (None, shown_before)

    assert wait_for(back, 90), (status.parts(), platform.log())


def test_each_child_killed_comes_back_and_the_status_page_shows_it(tmp_path, running):
    platform = Platform(embedded_env(tmp_path, HEARTBEAT_SECONDS="1"), tmp_path / "platform.log")
    running.append(platform)
    status = StatusPage(platform.url)
    assert wait_for(lambda: status.shows_up("web", "dicomnode", "ticker"), 120), (status.parts(), platform.log())
    assert platform.echo_succeeds()

    for name, part in (("dicomnode", "dicomnode"), ("ticker", "ticker"), ("web", "web")):
        kill_and_see_it_come_back(platform, status, name, part)
    assert wait_for(platform.echo_succeeds, 30), platform.log()
    assert web_answers(f"{platform.url}/accounts/login/")
    assert status.shows_up("web", "dicomnode", "ticker")
    assert platform.process.poll() is None
    assert compose_health_checks_pass(platform, embedded_env(tmp_path, HEARTBEAT_SECONDS="1"), ["dicomnode", "ticker"])
    assert platform.stop() == 0
    # Stopped: docker-compose's check of the web server fails.
    assert not compose_health_checks_pass(platform, embedded_env(tmp_path), [])


def compose_health_checks_pass(platform: Platform, env: dict[str, str], parts: list[str]) -> bool:
    """docker-compose.yml's health check of the web service, pointed at this web server, and
    `manage.py alive` (the other services' check) for `parts`."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    web = services["web"]["healthcheck"]["test"]
    assert web[:3] == ["CMD", "python", "-c"]
    script = web[3].replace("127.0.0.1:8000", f"127.0.0.1:{platform.web_port}")
    checks = [[sys.executable, "-c", script]]
    for part in parts:
        checks.append([sys.executable, "manage.py", "alive", part])
    for service in ("worker", "beat", "dicomnode"):
        assert services[service]["healthcheck"]["test"] == ["CMD", "python", "manage.py", "alive", service]
    return all(
        subprocess.run(check, cwd=ROOT, env=env, capture_output=True, timeout=120).returncode == 0 for check in checks
    )


def test_with_a_broker_the_worker_and_beat_killed_come_back_too(tmp_path, running, private_redis):
    env = embedded_env(tmp_path, HEARTBEAT_SECONDS="1")
    env["CELERY_BROKER_URL"] = private_redis.url
    platform = Platform(env, tmp_path / "platform.log")
    running.append(platform)
    status = StatusPage(platform.url)
    assert wait_for(lambda: status.shows_up("web", "dicomnode", "worker", "beat"), 180), (
        status.parts(),
        platform.log(),
    )
    assert "ticker" not in status.parts()

    for name in ("worker", "beat"):
        kill_and_see_it_come_back(platform, status, name, name)
    assert status.shows_up("web", "dicomnode", "worker", "beat")
    assert compose_health_checks_pass(platform, env, ["worker", "beat", "dicomnode"])
    assert platform.stop() == 0


def test_a_child_that_keeps_dying_at_once_makes_the_platform_give_up_loudly(tmp_path, running):
    # The receiver's port is taken: every start of the receiver fails within a second or two.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        platform = Platform(embedded_env(tmp_path), tmp_path / "platform.log", dicom_port=taken.getsockname()[1])
        running.append(platform)
        assert platform.process.wait(timeout=240) == 1, platform.log()
    log = platform.log()
    assert log.count("platform: dicomnode 已重启") == 4, log
    assert "dicomnode 连续 5 次在启动后 30 秒内退出" in log
    assert "不再重启，正在停止平台。" in log
    # The delays doubled: 1, 2, 4 and 8 s.
    assert re.findall(r"dicomnode 已退出（代码 1，运行了 \d+ 秒），(\d+) 秒后重启", log) == ["1", "2", "4", "8"]
    # Everything else was stopped with it.
    assert not web_answers(f"{platform.url}/accounts/login/")
