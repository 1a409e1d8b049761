"""Celery tasks of the billing app: thin wrappers around services."""

from __future__ import annotations

from celery import shared_task

from billing import monthly
from billing.rollup import follow_consult_changes
from billing.services import record_pending_savings


@shared_task(ignore_result=True)
def record_savings_for_signed_consults() -> int:
    """Every minute (CELERY_BEAT_SCHEDULE): one ledger entry for each newly signed exam.

    The consults app cannot call billing (it sits below it), so billing collects what was
    signed, like an outbox: an entry missed by a crash is picked up on the next run. Then
    the dashboards' rollup follows the consults' change feed (new, assigned, delivered
    consults: what a ledger entry does not cover)."""
    recorded = len(record_pending_savings())
    follow_consult_changes()
    return recorded


@shared_task(ignore_result=True)
def make_monthly_report() -> str:
    """Every 15 minutes (CELERY_BEAT_SCHEDULE, or the ticker without a broker): on the 1st
    of each month, the month before's printed report (billing.monthly.make_due_report),
    once; at every other run a single query finds it made. Returns the month made, or ""."""
    report = monthly.make_due_report()
    return f"{report.month:%Y-%m}" if report is not None else ""
