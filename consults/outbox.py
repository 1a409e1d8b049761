"""What the two outboxes share: the report send-back (ReportDelivery, consults.delivery)
and the alert e-mails (Notification, consults.notifications). A row is due when its time
has come, or when it was left `sending` by a process that died mid-attempt (its lease ran
out); an attempt takes it with one conditional UPDATE, so of a worker's task and the
periodic run reaching the same row at once exactly one goes on; a failed attempt waits a
delay that doubles each time. Below the workflow: it imports only models."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import F, Q

from consults.models import Consult, Notification, ReportDelivery

Address = tuple[str, str, int]
OutboxRow = type[ReportDelivery] | type[Notification]


def address_of(consult: Consult) -> Address | None:
    """The township archive's AE title, host and port: its modality's, where it has one."""
    modality = consult.modality
    if modality is None or not modality.host or not modality.port:
        return None
    return modality.ae_title, modality.host, modality.port


def address_label(address: Address) -> str:
    ae_title, host, port = address
    return f"{ae_title}@{host}:{port}"


def backoff(attempts: int, base: timedelta, longest: timedelta) -> timedelta:
    """The wait after the n-th failed attempt: `base`, doubled each time, at most `longest`."""
    return min(base * 2 ** max(attempts - 1, 0), longest)


def due(model: OutboxRow, now: datetime, lease: timedelta) -> Q:
    """Rows whose time has come, and rows left `sending` longer than `lease` ago."""
    return Q(status__in=[model.Status.PENDING, model.Status.RETRYING], next_attempt_at__lte=now) | Q(
        status=model.Status.SENDING, claimed_at__lt=now - lease
    )


def claim(model: OutboxRow, pk: int, now: datetime, lease: timedelta) -> bool:
    """Take the row for one attempt, if it is due and nobody else is on it."""
    return (
        model.objects.filter(due(model, now, lease), pk=pk).update(
            status=model.Status.SENDING,
            claimed_at=now,
            last_attempt_at=now,
            attempts=F("attempts") + 1,
        )
        == 1
    )
