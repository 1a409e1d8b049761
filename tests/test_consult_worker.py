"""The reading workflow's tasks on a real Celery worker over Redis: an arrived consult is
assigned by the roster, and the per-minute check flags what is late, in another process.

Needs CELERY_BROKER_URL and PostgreSQL (the worker must see the test database), as .ci/run
provides; elsewhere pytest reports it as skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from consults.models import Consult
from consults.tasks import assign_consult, check_consult_deadlines
from facilities.models import ExamKind, User
from tests.factories import make_consult, make_shift, make_user

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("CELERY_BROKER_URL"), reason="needs CELERY_BROKER_URL (Redis)"),
]


def test_a_real_worker_assigns_by_roster_and_flags_a_late_consult(township, tmp_path, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a shared database: run with DATABASE_URL on PostgreSQL")
    # Celery reads Django's settings once, possibly while an earlier test had made tasks
    # eager; this test is about the worker, so make sure nothing runs in this process.
    from cloudpacs.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", False)
    reader = make_user(User.Role.RADIOLOGIST, None, username="on_duty_worker")
    make_shift(reader, timezone.now() - timedelta(hours=1))
    fresh = make_consult(township, kind=ExamKind.DR)
    # Routine DR has two hours; this one arrived 100 minutes ago and is near its limit.
    late = make_consult(township, kind=ExamKind.DR, arrived_at=timezone.now() - timedelta(minutes=100))

    db = settings.DATABASES["default"]
    user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        CONSULT_AUTO_ASSIGN="false",
    )
    queue = f"test-{uuid.uuid4().hex}"
    log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cloudpacs", "worker", "--pool", "solo", "-Q", queue, "-l", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assign_consult.apply_async((fresh.pk,), queue=queue)
        check_consult_deadlines.apply_async(queue=queue)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
            Consult.objects.filter(pk=fresh.pk, radiologist=reader).exists()
            and Consult.objects.filter(pk=late.pk, flagged_at__isnull=False).exists()
        ):
            time.sleep(0.2)
        fresh.refresh_from_db()
        late.refresh_from_db()
        output = Path(log.name).read_text()
        assert fresh.radiologist == reader, output
        assert fresh.status == Consult.Status.ASSIGNED
        assert late.flagged_at is not None, output
        assert late.radiologist is None  # the worker ran with auto-assignment off
        assert "check_consult_deadlines" in output
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
