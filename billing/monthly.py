"""The printable monthly report (月报): one page for the county health commission and the
hospital's leadership (figures: billing.reports.monthly; drawn: billing.monthly_pdf),
stored as printed and audited. The periodic task (billing.tasks.make_monthly_report)
makes the month before's on the 1st; administrators make any ended month's on the
monthly report page."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import MonthlyReport
from billing.monthly_pdf import render_monthly_pdf
from billing.reports.common import recorded_span
from billing.reports.filters import month_end
from billing.reports.monthly import first_of_month, month_figures, previous_month
from facilities.models import User
from facilities.services import audit

# The month before's report is made from this hour of the 1st (local time), when the
# night's last readings of the month's exams are signed and in the ledger.
SCHEDULE_HOUR = 2


# ---------------------------------------------------------------------------- stored reports


class MonthNotOver(ValueError):
    """A report is made for a month that has ended."""


def make_report(
    month: date,
    *,
    by: User | None = None,
    trigger: str = MonthlyReport.Trigger.DEMAND,
    now: datetime | None = None,
) -> MonthlyReport:
    """Gather the month's figures, print them, store the PDF and audit it
    (`billing.monthly_report.generated`). `by` None is the periodic task."""
    now = now or timezone.now()
    first = first_of_month(month)
    if first >= first_of_month(timezone.localdate(now)):
        raise MonthNotOver(first)
    figures = month_figures(first)
    pdf = render_monthly_pdf(figures, made_at=now, made_by=by, language=settings.LANGUAGE_CODE)
    with transaction.atomic():
        report = MonthlyReport.objects.create(
            month=first,
            trigger=trigger,
            made_at=now,
            made_by=by,
            language=settings.LANGUAGE_CODE,
            pdf=pdf,
            size=len(pdf),
            sha256=hashlib.sha256(pdf).hexdigest(),
            figures=figures.headline(),
        )
        audit(
            "billing.monthly_report.generated",
            actor=by,
            obj=report,
            month=f"{first:%Y-%m}",
            trigger=trigger,
        )
    return report


def due_month(now: datetime) -> date | None:
    """The month whose scheduled report is due at `now`: the month before, from
    SCHEDULE_HOUR of the 1st on (local time). None before the first exam recorded."""
    local = timezone.localtime(now)
    this_month = local.date().replace(day=1)
    if local.date() == this_month and local.time() < time(SCHEDULE_HOUR):
        return None
    month = previous_month(this_month)
    span = recorded_span()
    if span is None or month_end(month) < span[0]:
        return None
    return month


def make_due_report(now: datetime | None = None) -> MonthlyReport | None:
    """The periodic task's work: the month before's report, once. Run every few minutes
    (CELERY_BEAT_SCHEDULE, or the ticker), it makes it on the 1st and, if the platform was
    down then, at the first run after; at any other run it finds it made and does nothing."""
    now = now or timezone.now()
    month = due_month(now)
    if month is None:
        return None
    if MonthlyReport.objects.filter(month=month, trigger=MonthlyReport.Trigger.SCHEDULE).exists():
        return None
    try:
        return make_report(month, trigger=MonthlyReport.Trigger.SCHEDULE, now=now)
    except IntegrityError:
        # Another worker made it meanwhile (the unique constraint): one a month.
        return None
