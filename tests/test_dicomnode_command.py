"""`manage.py dicomnode` as its own process: it sweeps orphans, serves, opens consults for
stable studies from its own timer, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from pydicom.uid import generate_uid

from cloudpacs.models import Study
from consults.models import Consult
from tests.factories import make_dataset, write_dataset
from tests.processes import shared_database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parent.parent


def test_the_command_serves_sweeps_and_stops_on_sigterm(ct_modality, tmp_path):
    storage_root = Path(settings.STORAGE_ROOT)
    (storage_root / ".incoming").mkdir(parents=True)
    orphan = storage_root / ".incoming" / "left-by-a-crash.part"
    orphan.write_bytes(b"\x00" * 64)
    env = {
        **os.environ,
        "DATABASE_URL": shared_database_url(),
        "STORAGE_ROOT": str(storage_root),
        "STUDY_STABLE_SECONDS": "1",
        "DICOM_AE_TITLE": "CLOUDPACS",
        "CELERY_BROKER_URL": "",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "dicomnode", "--host", "127.0.0.1", "--port", "0"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + process.stderr.read()
        port = line.strip().rsplit(":", 1)[1]
        assert not orphan.exists()
        study_uid, series_uid = generate_uid(), generate_uid()
        paths = [
            write_dataset(
                make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n), tmp_path / f"{n}"
            )
            for n in range(1, 4)
        ]
        result = subprocess.run(
            ["storescu", "-aet", ct_modality.ae_title, "-aec", "CLOUDPACS", "127.0.0.1", port, *map(str, paths)],
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert wait_for(lambda: Consult.objects.filter(study__study_uid=study_uid).exists())
        assert Study.objects.get(study_uid=study_uid).status == Study.Status.ARRIVED
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "stopped" in out


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def test_without_a_broker_the_sweep_runs_in_a_process_of_its_own_that_ends_with_the_receiver(ct_modality, tmp_path):
    # Not on the receiver's threads: there it held the interpreter lock the association
    # threads need (dicomnode.stability).
    env = {
        **os.environ,
        "DATABASE_URL": shared_database_url(),
        "STORAGE_ROOT": str(settings.STORAGE_ROOT),
        "STUDY_STABLE_SECONDS": "0",
        "DICOM_AE_TITLE": "CLOUDPACS",
        "CELERY_BROKER_URL": "",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "dicomnode", "--host", "127.0.0.1", "--port", "0"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "listening on 127.0.0.1:" in process.stdout.readline()
        assert wait_for(lambda: any("stability_sweep" in command_line(c) for c in children(process.pid)), 30)
        [sweeper] = [c for c in children(process.pid) if "stability_sweep" in command_line(c)]
        assert f"--parent {process.pid}" in command_line(sweeper)
        # It is started again if it dies.
        os.kill(sweeper, signal.SIGKILL)
        assert wait_for(
            lambda: any("stability_sweep" in command_line(c) and c != sweeper for c in children(process.pid)), 30
        )
        [sweeper] = [c for c in children(process.pid) if "stability_sweep" in command_line(c)]
        # A receiver killed outright leaves no sweep behind (it looks every second, once
        # it has started: Django takes seconds to start on a busy machine).
        process.kill()
        process.wait(timeout=30)
        assert wait_for(lambda: "stability_sweep" not in command_line(sweeper), 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
