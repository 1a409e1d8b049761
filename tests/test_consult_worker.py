"""The reading workflow's tasks on a real Celery worker over Redis: an arrived consult is
assigned by the roster, and the per-minute check flags what is late, in another process.

Needs CELERY_BROKER_URL and PostgreSQL (the worker must see the test database), as .ci/run
provides; elsewhere pytest reports it as skipped."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from consults.models import Consult
from consults.tasks import assign_consult, check_consult_deadlines
from facilities.models import ExamKind, User
from tests.factories import make_consult, make_shift, make_user

pytestmark = [
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]


def test_a_real_worker_assigns_by_roster_and_flags_a_late_consult(township, celery_worker_process):
    reader = make_user(User.Role.RADIOLOGIST, None, username="on_duty_worker")
    make_shift(reader, timezone.now() - timedelta(hours=1))
    fresh = make_consult(township, kind=ExamKind.DR)
    # Routine DR has two hours; this one arrived 100 minutes ago and is near its limit.
    late = make_consult(township, kind=ExamKind.DR, arrived_at=timezone.now() - timedelta(minutes=100))
    worker = celery_worker_process(CONSULT_AUTO_ASSIGN="false")

    assign_consult.apply_async((fresh.pk,), queue=worker.queue)
    check_consult_deadlines.apply_async(queue=worker.queue)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (
        Consult.objects.filter(pk=fresh.pk, radiologist=reader).exists()
        and Consult.objects.filter(pk=late.pk, flagged_at__isnull=False).exists()
    ):
        time.sleep(0.2)
    fresh.refresh_from_db()
    late.refresh_from_db()
    assert fresh.radiologist == reader, worker.output()
    assert fresh.status == Consult.Status.ASSIGNED
    assert late.flagged_at is not None, worker.output()
    assert late.radiologist is None  # the worker ran with auto-assignment off
    assert "check_consult_deadlines" in worker.output()
