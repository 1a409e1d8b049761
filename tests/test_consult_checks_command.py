"""The consult_checks command: the per-minute check for deployments without Celery beat."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.utils import timezone

from consults.models import Consult
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
