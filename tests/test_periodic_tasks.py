"""The periodic work: signed exams reach the ledger, new consults reach a reader, and the
ticker runs beat's schedule in-process when there is no broker."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import LedgerEntry
from billing.services import ensure_shaanxi_2021_schedule
from billing.tasks import record_savings_for_signed_consults
from consults.models import Consult, ReportDelivery
from consults.services import open_consult_for_study
from facilities.models import ExamKind
from tests.factories import make_consult, make_shift, make_study
from tests.test_consult_pdf import Archive, signed_consult

pytestmark = pytest.mark.django_db


def signed(consult: Consult, parts: int = 1) -> Consult:
    now = timezone.now()
    Consult.objects.filter(pk=consult.pk).update(
        status=Consult.Status.SIGNED, signed_at=now, assigned_at=now, opened_at=now, body_parts=parts
    )
    consult.refresh_from_db()
    return consult


def test_a_signed_township_exam_gets_exactly_one_ledger_entry(township, radiologist):
    ensure_shaanxi_2021_schedule()
    consult = signed(make_consult(township, kind=ExamKind.CT, exam_date=date(2025, 9, 1), radiologist=radiologist), 2)
    make_consult(township, kind=ExamKind.DR)  # not signed: not billed

    assert record_savings_for_signed_consults.delay().get() == 1
    assert record_savings_for_signed_consults.delay().get() == 0

    entry = LedgerEntry.objects.get()
    assert entry.consult == consult
    assert (entry.county_price, entry.township_price, entry.saving) == (180, 150, 60)


def test_an_exam_before_any_price_edition_waits_instead_of_failing(township):
    ensure_shaanxi_2021_schedule()
    signed(make_consult(township, kind=ExamKind.DR, exam_date=date(2019, 6, 1)))
    assert record_savings_for_signed_consults.delay().get() == 0
    assert not LedgerEntry.objects.exists()


def test_a_new_consult_is_offered_to_the_reader_on_duty(
    township, ct_modality, radiologist, django_capture_on_commit_callbacks
):
    make_shift(radiologist, timezone.now() - timedelta(hours=1))
    study = make_study(township, ct_modality)
    with django_capture_on_commit_callbacks(execute=True):
        consult = open_consult_for_study(study)
    consult.refresh_from_db()
    assert consult.radiologist == radiologist
    assert consult.status == Consult.Status.ASSIGNED


@pytest.mark.django_db(transaction=True)  # the ticker closes stale connections, as a process should
def test_the_ticker_runs_beats_schedule_in_process(township, radiologist):
    ensure_shaanxi_2021_schedule()
    make_shift(radiologist, timezone.now() - timedelta(hours=1))
    waiting = make_consult(township, kind=ExamKind.DR)
    signed(make_consult(township, kind=ExamKind.DR, exam_date=date(2025, 3, 3)))

    call_command("ticker", "--once")

    waiting.refresh_from_db()
    assert waiting.radiologist == radiologist
    assert LedgerEntry.objects.count() == 1


def test_without_a_broker_signing_hands_the_send_back_to_the_periodic_run_not_to_the_request(
    township, ct_modality, django_capture_on_commit_callbacks
):
    from cloudpacs.celery import runs_in_process
    from consults.tasks import deliver_report

    ct_modality.host, ct_modality.port = "127.0.0.1", 104
    ct_modality.save()
    assert runs_in_process()  # no broker: the Celery configuration says so, and only it
    with django_capture_on_commit_callbacks(execute=True) as queued:
        consult = signed_consult(township, ct_modality)

    assert queued  # the workflow queued the send-back, as with a broker...
    outbox = ReportDelivery.objects.get(consult=consult)
    # ...and it was not tried in the signing request: the ticker's deliver_due_reports will.
    assert (outbox.status, outbox.attempts) == (ReportDelivery.Status.PENDING, 0)
    assert deliver_report.delay(outbox.pk) is None
    outbox.refresh_from_db()
    assert outbox.attempts == 0


@pytest.mark.django_db(transaction=True)
def test_without_a_broker_the_ticker_sends_a_signed_report_once_its_archive_comes_up(township, ct_modality):
    archive = Archive()
    ct_modality.host, ct_modality.port = "127.0.0.1", archive.port
    ct_modality.save()
    consult = signed_consult(township, ct_modality)
    try:
        call_command("ticker", "--once")  # the archive is down
        outbox = ReportDelivery.objects.get(consult=consult)
        assert (outbox.status, outbox.attempts) == (ReportDelivery.Status.RETRYING, 1)

        archive.start()
        # The retry's time comes.
        ReportDelivery.objects.filter(pk=outbox.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        call_command("ticker", "--once")
        ReportDelivery.objects.filter(pk=outbox.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        call_command("ticker", "--once")
    finally:
        archive.stop()

    assert len(archive.received) == 1
    outbox.refresh_from_db()
    assert (outbox.status, outbox.attempts) == (ReportDelivery.Status.SENT, 2)
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED


@pytest.mark.django_db(transaction=True)
def test_the_ticker_opens_the_consult_of_a_study_no_receiver_swept(township, ct_modality, settings):
    # A receiver started with --no-sweep-timer, or one whose sweeps were lost while the
    # broker was down: beat's schedule (here the ticker's) still hands the study over.
    from cloudpacs.models import Study

    settings.STUDY_STABLE_SECONDS = 10
    quiet_since = timezone.now() - timedelta(seconds=30)
    study = make_study(township, ct_modality, status=Study.Status.RECEIVING, last_received_at=quiet_since)

    call_command("ticker", "--once")
    call_command("ticker", "--once")

    study.refresh_from_db()
    assert study.status == Study.Status.ARRIVED
    assert Consult.objects.filter(study=study).count() == 1
