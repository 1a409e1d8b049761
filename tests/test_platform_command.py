"""`manage.py platform` starts the web server and the DICOM receiver together, prints
where they are, and stops all of it on Ctrl-C. Run as real processes on free ports,
on an embedded SQLite database of its own (the embedded default a newcomer gets)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def web_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return response.status == 200
    except OSError:
        return False


def test_the_platform_runs_web_and_dicom_and_stops_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(YUNYING_VAR_DIR=str(tmp_path), DEMO_MODE="true", PYTHONUNBUFFERED="1")
    manage = [sys.executable, "manage.py"]
    for step in (["migrate", "--noinput", "-v0"], ["seed_hanyin", "--no-history"]):
        subprocess.run([*manage, *step], cwd=ROOT, env=env, check=True, capture_output=True, timeout=180)

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
