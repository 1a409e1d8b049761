"""Sending the alert e-mails of the mail outbox (Notification): a critical finding's alert
to the township, an escalation's message to whoever it went to.

The workflow writes the row in the step's transaction and tries once to hand it to a
worker; `send` makes one attempt at one row, `send_due` at every row whose time has come.
The periodic task runs `send_due` (Celery beat with a broker, the ticker without one), so
a row whose task never reached a worker, because the broker was down or frozen, is sent
once the broker is back; a mail server that is down is retried with a growing delay."""

from __future__ import annotations

import logging
import smtplib
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone, translation

from consults import workflow
from consults.models import CriticalFinding, Escalation, Notification
from facilities.services import audit

logger = logging.getLogger("consults")

# The longest wait between two attempts: an alert is worth trying again within minutes.
MAX_DELAY = timedelta(minutes=10)


def backoff(attempts: int) -> timedelta:
    """The wait after the n-th failed attempt: the base delay, doubled each time, at most ten minutes."""
    base = timedelta(seconds=settings.MAIL_RETRY_SECONDS)
    return min(base * 2 ** max(attempts - 1, 0), MAX_DELAY)


def _lease() -> timedelta:
    # Longer than one attempt can last (the mail server's timeout, twice), so a row still
    # marked as sending after this was left by a process that died mid-attempt.
    return timedelta(seconds=2 * settings.EMAIL_TIMEOUT + 60)


def _due(now: datetime) -> Q:
    return Q(status__in=[Notification.Status.PENDING, Notification.Status.RETRYING], next_attempt_at__lte=now) | Q(
        status=Notification.Status.SENDING, claimed_at__lt=now - _lease()
    )


def _claim(notification_id: int, now: datetime) -> bool:
    """Take the row for one attempt. A conditional UPDATE: of a worker's task and the
    periodic run reaching the same row at once, exactly one goes on to send."""
    return (
        Notification.objects.filter(_due(now), pk=notification_id).update(
            status=Notification.Status.SENDING,
            claimed_at=now,
            last_attempt_at=now,
            attempts=F("attempts") + 1,
        )
        == 1
    )


def _mail(subject: str, body: str, to: str) -> str:
    """Send one message through Django's configured backend (EMAIL_*); an empty string when
    the server took it, else why not."""
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to])
    except (smtplib.SMTPException, OSError) as error:
        logger.warning("mail to %s failed: %s", to, error)
        return f"{type(error).__name__}: {error}"[:200]
    return ""


def _message(row: Notification) -> tuple[str, str]:
    with translation.override(settings.LANGUAGE_CODE):
        if row.critical_finding is not None:
            return workflow.critical_alert_message(row.critical_finding)
        assert row.escalation is not None
        return workflow.escalation_message(row.escalation)


def _audit(outcome: str, row: Notification, **detail: Any) -> None:
    """An attempt's audit entry: `consults.critical.emailed`, `consults.escalation.email_failed`..."""
    if row.critical_finding is not None:
        detail["finding"] = str(row.critical_finding.uuid)
    if row.escalation is not None:
        detail["reason"] = row.escalation.reason
    audit(f"consults.{row.kind}.{outcome}", obj=row.consult, to=row.recipient, attempt=row.attempts, **detail)


def send(notification_id: int, now: datetime | None = None) -> str | None:
    """One attempt at one row, if it is due and nobody else is on it: the new status, or
    None when it was not attempted."""
    now = now or timezone.now()
    if not _claim(notification_id, now):
        return None
    row = Notification.objects.select_related(
        "consult__facility",
        "critical_finding__consult__facility",
        "critical_finding__flagged_by",
        "escalation__consult__facility",
        "escalation__to_user",
        "escalation__from_radiologist",
        "escalation__critical_finding",
    ).get(pk=notification_id)
    try:
        subject, body = _message(row)
    except Exception as error:  # a broken template must not wedge the row in 'sending'
        logger.exception("notification %s: the message could not be written", row.pk)
        error_text = f"message: {type(error).__name__}: {error}"[:255]
    else:
        error_text = _mail(subject, body, row.recipient)
    sent_at = timezone.now()
    with transaction.atomic():
        fields: dict[str, object] = {"claimed_at": None}
        if not error_text:
            fields.update(status=Notification.Status.SENT, sent_at=sent_at, last_error="")
        elif row.attempts >= settings.MAIL_MAX_ATTEMPTS:
            fields.update(status=Notification.Status.FAILED, last_error=error_text)
        else:
            fields.update(
                status=Notification.Status.RETRYING, last_error=error_text, next_attempt_at=now + backoff(row.attempts)
            )
        Notification.objects.filter(pk=row.pk).update(**fields)
        if error_text:
            _audit("email_failed", row, error=error_text, final=fields["status"] == Notification.Status.FAILED)
        else:
            if row.critical_finding is not None:
                CriticalFinding.objects.filter(pk=row.critical_finding.pk, emailed_at__isnull=True).update(
                    emailed_at=sent_at
                )
            if row.escalation is not None:
                Escalation.objects.filter(pk=row.escalation.pk, emailed_at__isnull=True).update(emailed_at=sent_at)
            _audit("emailed", row)
    return str(fields["status"])


def send_due(now: datetime | None = None, limit: int = 50, budget_seconds: float = 30.0) -> dict[int, str]:
    """An attempt at every row whose time has come, oldest first: {row: new status}.

    No new attempt starts after `budget_seconds` (without a broker the ticker runs this
    between the other periodic checks); the rest are due again at the next run."""
    now = now or timezone.now()
    started = time.monotonic()
    rows = list(
        Notification.objects.filter(_due(now)).order_by("next_attempt_at", "id").values_list("pk", flat=True)[:limit]
    )
    outcome: dict[int, str] = {}
    for pk in rows:
        if time.monotonic() - started > budget_seconds:
            break
        status = send(pk, now)
        if status is not None:
            outcome[pk] = status
    return outcome


def oldest_unsent() -> Notification | None:
    """The alert that has waited longest without being sent (failed ones included)."""
    return (
        Notification.objects.exclude(status=Notification.Status.SENT)
        .select_related("consult__facility")
        .order_by("created_at", "id")
        .first()
    )
