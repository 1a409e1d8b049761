"""The consult_checks command: the per-minute check for deployments without Celery beat."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.utils import timezone

from consults import workflow
from consults.models import Consult, Notification
from facilities.models import ExamKind, User
from tests.factories import make_consult, make_shift, make_user


def test_it_runs_the_check_once_and_reports_what_it_did(township):
    reader = make_user(User.Role.RADIOLOGIST, None, username="on_duty")
    make_shift(reader, timezone.now() - timedelta(hours=1))
    consult = make_consult(township, kind=ExamKind.DR)
    out = StringIO()

    call_command("consult_checks", stdout=out)

    assert "assigned=1" in out.getvalue()
    consult.refresh_from_db()
    assert consult.status == Consult.Status.ASSIGNED


def test_it_sends_the_alert_mails_whose_first_attempt_failed(township, mailoutbox):
    township.alert_email = "yizhen@xuanwo.test"
    township.save()
    reader = make_user(User.Role.RADIOLOGIST, None, username="li")
    consult = make_consult(township, kind=ExamKind.CT)
    workflow.claim_consult(consult, reader)
    # Its task never ran (no commit here, as when the broker was down): the row waits.
    finding = workflow.flag_critical(consult, reader, "气胸")
    assert Notification.objects.get(critical_finding=finding).status == Notification.Status.PENDING
    out = StringIO()

    call_command("consult_checks", stdout=out)

    assert "alerts_sent=1" in out.getvalue()
    assert [m.to for m in mailoutbox] == [["yizhen@xuanwo.test"]]
    assert Notification.objects.get(critical_finding=finding).status == Notification.Status.SENT
