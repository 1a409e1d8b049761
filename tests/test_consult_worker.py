"""The reading workflow's tasks on a real Celery worker over Redis: an arrived consult is
assigned by the roster, the per-minute check flags what is late, and a signed report's
send-back reaches an archive that was down at first, in another process.

Needs CELERY_BROKER_URL and PostgreSQL (the worker must see the test database), as .ci/run
provides; elsewhere pytest reports it as skipped."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from cloudpacs.celery import app
from consults.models import Consult, ReportDelivery
from consults.tasks import assign_consult, check_consult_deadlines, deliver_due_reports
from facilities.models import ExamKind, User
from tests.factories import make_consult, make_shift, make_user
from tests.test_consult_pdf import Archive, signed_consult

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


def _wait_for(condition, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.2)


def test_a_real_worker_sends_the_signed_report_once_its_archive_comes_up(
    township, ct_modality, celery_worker_process, monkeypatch
):
    archive = Archive()
    ct_modality.host, ct_modality.port = "127.0.0.1", archive.port
    ct_modality.save()
    worker = celery_worker_process()
    # Tasks sent without a queue (the signing's, on commit) go to this test's worker.
    monkeypatch.setitem(app.conf, "task_default_queue", worker.queue)
    try:
        consult = signed_consult(township, ct_modality)  # commits: the worker gets the send-back
        outbox = ReportDelivery.objects.get(consult=consult)
        _wait_for(lambda: ReportDelivery.objects.filter(pk=outbox.pk, attempts__gte=1, claimed_at=None).exists())
        outbox.refresh_from_db()
        assert (outbox.status, outbox.attempts) == (ReportDelivery.Status.RETRYING, 1), worker.output()

        archive.start()
        # The retry's time comes; beat would send this every 30 s.
        ReportDelivery.objects.filter(pk=outbox.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        deliver_due_reports.apply_async(queue=worker.queue)
        deliver_due_reports.apply_async(queue=worker.queue)
        _wait_for(lambda: ReportDelivery.objects.filter(pk=outbox.pk, status=ReportDelivery.Status.SENT).exists())
        check_consult_deadlines.apply_async(queue=worker.queue)  # a task after both: they have run
        _wait_for(lambda: worker.output().count("check_consult_deadlines") >= 2)
    finally:
        archive.stop()

    assert len(archive.received) == 1, worker.output()
    outbox.refresh_from_db()
    assert (outbox.status, outbox.attempts) == (ReportDelivery.Status.SENT, 2)
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
