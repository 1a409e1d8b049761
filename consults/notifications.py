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
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from consults import outbox
from consults.models import CriticalFinding, Escalation, Notification
from consults.rules import due_at_for
from facilities.services import audit

logger = logging.getLogger("consults")

# The longest wait between two attempts: an alert is worth trying again within minutes.
MAX_DELAY = timedelta(minutes=10)


def backoff(attempts: int) -> timedelta:
    """The wait after the n-th failed attempt: the base delay, doubled each time, at most ten minutes."""
    return outbox.backoff(attempts, timedelta(seconds=settings.MAIL_RETRY_SECONDS), MAX_DELAY)


def _lease() -> timedelta:
    # Longer than one attempt can last (the mail server's timeout, twice), so a row still
    # marked as sending after this was left by a process that died mid-attempt.
    return timedelta(seconds=2 * settings.EMAIL_TIMEOUT + 60)


def critical_alert_message(finding: CriticalFinding) -> tuple[str, str]:
    """The subject and body of the e-mail to the township's alert address."""
    facility = finding.consult.facility
    with translation.override(settings.LANGUAGE_CODE):
        subject = _("【危急值】%(facility)s 的会诊") % {"facility": facility.short_name_in()}
        body = _(
            "%(facility)s：\n\n诊断医师 %(reader)s 于 %(at)s 报告危急值：\n%(text)s\n\n"
            "请立即处理，并在平台上确认：%(url)s\n"
        ) % {
            "facility": facility.name_in(),
            "reader": finding.flagged_by,
            "at": timezone.localtime(finding.flagged_at).strftime("%Y-%m-%d %H:%M"),
            "text": finding.description,
            "url": f"{settings.SITE_URL}/reading/{finding.consult.uuid}/",
        }
    return subject, body


def escalation_message(escalation: Escalation) -> tuple[str, str]:
    """The subject and body of the e-mail to the person an escalation went to."""
    consult = escalation.consult
    recipient = escalation.to_user
    facts = {
        "name": recipient,
        "facility": consult.facility.name_in(),
        "short": consult.facility.short_name_in(),
        "priority": consult.get_priority_display(),
        "kind": consult.get_kind_display(),
        "arrived": timezone.localtime(consult.arrived_at).strftime("%Y-%m-%d %H:%M"),
        "due": timezone.localtime(consult.due_at or due_at_for(consult)).strftime("%Y-%m-%d %H:%M"),
        "previous": escalation.from_radiologist or _("无"),
        "holder": consult.radiologist or _("无人领取"),
        "url": f"{settings.SITE_URL}/reading/{consult.uuid}/",
    }
    if escalation.reason == Escalation.Reason.CRITICAL_UNACKNOWLEDGED and escalation.critical_finding is not None:
        finding = escalation.critical_finding
        subject = _("【危急值未确认】%(facility)s") % {"facility": consult.facility.short_name_in()}
        body = _("%(facility)s 尚未确认 %(at)s 报告的危急值：\n%(text)s\n请电话联系该院。\n%(url)s\n") % {
            "facility": consult.facility.name_in(),
            "at": timezone.localtime(finding.flagged_at).strftime("%Y-%m-%d %H:%M"),
            "text": finding.description,
            "url": facts["url"],
        }
    elif escalation.reason == Escalation.Reason.OFF_DUTY:
        subject = _("【交班转派】%(short)s %(priority)s %(kind)s 会诊") % facts
        body = (
            _(
                "%(name)s：\n\n原诊断医师 %(previous)s 已下班，%(facility)s 的%(priority)s %(kind)s 会诊"
                "（到达 %(arrived)s，时限 %(due)s）现转给您阅片：\n%(url)s\n"
            )
            % facts
        )
    elif escalation.reassigned:
        subject = _("【超时转派】%(short)s %(priority)s %(kind)s 会诊") % facts
        body = (
            _(
                "%(name)s：\n\n%(facility)s 的%(priority)s %(kind)s 会诊（到达 %(arrived)s，时限 %(due)s）"
                "已超过诊断时限，原诊断医师 %(previous)s 尚未阅片，现转给您：\n%(url)s\n"
            )
            % facts
        )
    else:
        subject = _("【会诊超时】%(short)s %(priority)s %(kind)s 会诊") % facts
        body = (
            _(
                "%(name)s：\n\n%(facility)s 的%(priority)s %(kind)s 会诊（到达 %(arrived)s，时限 %(due)s）"
                "已超过诊断时限，目前诊断医师：%(holder)s，没有其他在班医师可以接手。请安排处理：\n%(url)s\n"
            )
            % facts
        )
    return subject, body


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
            return critical_alert_message(row.critical_finding)
        assert row.escalation is not None
        return escalation_message(row.escalation)


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
    if not outbox.claim(Notification, notification_id, now, _lease()):
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
        Notification.objects.filter(outbox.due(Notification, now, _lease()))
        .order_by("next_attempt_at", "id")
        .values_list("pk", flat=True)[:limit]
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
