"""`manage.py platform`: the whole platform in one command.

Starts the web server, the DICOM receiver and, when a broker is configured, the Celery
worker and beat (without one, the ticker), each as its own process; prints where to reach
them; stops all of them on Ctrl-C or SIGTERM.

A child that dies is started again, after a delay that doubles with each quick death
(1 s, 2 s, 4 s ... at most 30 s), and the log says so. On a hospital's single machine a
platform that keeps receiving studies after its receiver crashed is worth more than one that
stops whole for someone to notice. Only a child that dies within FAST_FAILURE_SECONDS of
its start MAX_FAST_FAILURES times in a row (a port taken, a broken configuration) makes
the platform give up: it says why, stops everything and exits non-zero, for a supervisor
or a person to act on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from django.utils.translation import gettext as _

STOP_GRACE_SECONDS = 10.0
# A child that dies sooner than this after its start died "fast"; this many fast deaths in
# a row and the platform gives up on it.
FAST_FAILURE_SECONDS = 30.0
MAX_FAST_FAILURES = 5
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    # Deaths within FAST_FAILURE_SECONDS of the start, in a row; a start that lasts resets it.
    fast_failures: int = 0
    restarts: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        # Each child in its own process group, so Ctrl-C in the terminal reaches only the
        # platform, which then stops the children in order, and so that what a dead child
        # leaves behind (gunicorn's workers, Celery's pool) can be ended with it.
        self.process = subprocess.Popen(self.argv, start_new_session=True)  # noqa: S603
        self.started_at = time.monotonic()
        self.restart_at = None

    def kill_leftovers(self) -> None:
        """End whatever of the dead child's process group still runs: a gunicorn worker
        still holding the port would keep the new web server from binding it."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def restart_delay(fast_failures: int) -> float:
    """The wait before the next start: 1 s after a child that ran a while, doubling with
    each fast death in a row, at most MAX_RESTART_DELAY."""
    return min(FIRST_RESTART_DELAY * 2 ** max(fast_failures - 1, 0), MAX_RESTART_DELAY)


class Command(BaseCommand):
    help = "Run the web server, the DICOM receiver and the task worker together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--web-host", default=settings.WEB_HOST)
        parser.add_argument("--web-port", type=int, default=settings.WEB_PORT)
        parser.add_argument("--dicom-host", default=settings.DICOM_HOST)
        parser.add_argument("--dicom-port", type=int, default=settings.DICOM_PORT)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        children = self._children(options)
        stopping = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        for child in children:
            child.start()
            self._log_start(child)
        self._announce(options)

        exit_code = 0
        while not stopping:
            now = time.monotonic()
            for child in children:
                if child.process is None or child.restart_at is not None:
                    if child.restart_at is not None and now >= child.restart_at and not stopping:
                        child.restarts += 1
                        child.start()
                        self._log_start(child)
                    continue
                code = child.process.poll()
                if code is None:
                    if child.fast_failures and now - child.started_at >= FAST_FAILURE_SECONDS:
                        child.fast_failures = 0
                    continue
                child.kill_leftovers()
                ran = now - child.started_at
                child.fast_failures = child.fast_failures + 1 if ran < FAST_FAILURE_SECONDS else 0
                if child.fast_failures >= MAX_FAST_FAILURES:
                    message = _(
                        "%(name)s 连续 %(count)d 次在启动后 %(seconds)d 秒内退出（最后一次代码 %(code)s），"
                        "不再重启，正在停止平台。"
                    ) % {
                        "name": child.name,
                        "count": child.fast_failures,
                        "seconds": FAST_FAILURE_SECONDS,
                        "code": code,
                    }
                    self._say(message)
                    stopping = True
                    exit_code = 1
                    break
                delay = restart_delay(child.fast_failures)
                child.restart_at = now + delay
                self._say(
                    _("%(name)s 已退出（代码 %(code)s，运行了 %(ran).0f 秒），%(delay).0f 秒后重启。")
                    % {"name": child.name, "code": code, "ran": ran, "delay": delay}
                )
            time.sleep(0.2)

        self._stop(children)
        if exit_code:
            sys.exit(exit_code)

    def _say(self, message: str) -> None:
        """One line of the platform's own log, on stderr beside the children's, with the time."""
        self.stderr.write(f"{timezone.localtime():%Y-%m-%d %H:%M:%S} platform: {message}")
        self.stderr.flush()

    def _log_start(self, child: Child) -> None:
        assert child.process is not None
        if child.restarts:
            self._say(
                _("%(name)s 已重启（进程 %(pid)s，第 %(count)d 次重启）。")
                % {"name": child.name, "pid": child.process.pid, "count": child.restarts}
            )
        else:
            self._say(_("%(name)s 已启动（进程 %(pid)s）。") % {"name": child.name, "pid": child.process.pid})

    def _children(self, options: dict[str, Any]) -> list[Child]:
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        web_bind = f"{options['web_host']}:{options['web_port']}"
        children = [
            Child(
                "web",
                [
                    python,
                    "-m",
                    "gunicorn",
                    "cloudpacs.wsgi:application",
                    "--bind",
                    web_bind,
                    "--workers",
                    str(options["web_workers"]),
                    "--threads",
                    "4",
                    "--access-logfile",
                    "-",
                    "--graceful-timeout",
                    "5",
                ],
            ),
            Child(
                "dicomnode",
                [python, manage, "dicomnode", "--host", options["dicom_host"], "--port", str(options["dicom_port"])],
            ),
        ]
        if settings.CELERY_BROKER_URL:
            celery = [python, "-m", "celery", "-A", "cloudpacs"]
            children.append(Child("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"]))
            schedule = Path(settings.VAR_DIR) / "celerybeat-schedule"
            children.append(Child("beat", [*celery, "beat", "--loglevel", "INFO", "--schedule", str(schedule)]))
        else:
            # No broker: beat's schedule runs in-process, the same periodic work either way.
            children.append(Child("ticker", [python, manage, "ticker"]))
        return children

    def _announce(self, options: dict[str, Any]) -> None:
        host = options["web_host"]
        shown_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
        lines = [
            "",
            _("云影 Yunying 已启动"),
            _("  网页:      http://%(host)s:%(port)s/") % {"host": shown_host, "port": options["web_port"]},
            _("  DICOM:     AE 标题 %(aet)s，地址 %(host)s，端口 %(port)s")
            % {"aet": settings.DICOM_AE_TITLE, "host": options["dicom_host"], "port": options["dicom_port"]},
            _("  数据库:    %(engine)s") % {"engine": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]},
            _("  任务:      %(mode)s") % {"mode": self._task_mode()},
        ]
        lines += self._demo_logins()
        lines += [_("按 Ctrl-C 停止。"), ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _task_mode(self) -> str:
        if settings.CELERY_BROKER_URL:
            return _("Celery 工作进程（%(broker)s）") % {"broker": settings.CELERY_BROKER_URL}
        return _("进程内执行")

    def _demo_logins(self) -> list[str]:
        if not settings.DEMO_MODE:
            return []
        from facilities.demo import demo_accounts

        accounts = demo_accounts(get_user_model().objects.all())
        if not accounts:
            return [_("  （尚无演示账号：先运行 manage.py seed_hanyin）")]
        lines = [_("  演示账号（用户名 / 密码 / 角色）:")]
        lines += [f"    {a.username:<16} {a.password:<22} {a.role_label}" for a in accounts]
        return lines

    def _stop(self, children: list[Child]) -> None:
        self.stdout.write(_("正在停止……"))
        # The receiver first, so no association is cut while the web side still answers.
        order = sorted(children, key=lambda c: 0 if c.name == "dicomnode" else 1)
        for child in order:
            if child.process is not None and child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in order:
            if child.process is None or child.process.returncode is not None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        self.stdout.write(_("已停止。"))
