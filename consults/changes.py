"""The consults' change feed: "this consult changed", published by the step that changed it
and followed by the apps above consults (today billing's dashboard rollup).

consults sits below billing and cannot call it; a signal would hide the call. Instead every
step that changes a consult's row (consults.workflow, and the opening of a consult in
consults.services) calls `publish` in its own transaction, which writes a
`ConsultChange` row: the change and the row commit together or not at all. A follower
takes the rows with `taken`, in a transaction of its own, and the rows it took are
deleted when that transaction commits; if it fails, they stay for the next run. A
follower must therefore be idempotent (the rollup recomputes a day from the raw rows, so
following a change twice gives the same figures).

Rows are taken, not read past a cursor: a cursor over ids would skip a row whose
transaction committed after one with a higher id had been read (ids are handed out when a
row is inserted, not when it commits). Below the workflow: it imports only models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from django.db import transaction
from django.utils import timezone

from consults.models import Consult, ConsultChange

# Rows deleted per statement: SQLite may bind no more than 999 parameters.
_DELETE_BATCH = 500


class Change(StrEnum):
    """What happened to the consult."""

    CREATED = "created"  # opened for a stable study, or requested by the township
    ASSIGNED = "assigned"  # given to a reader: by the roster, a claim or a reassignment
    RELEASED = "released"  # back to the shared worklist
    OPENED = "opened"
    CORRECTED = "corrected"  # the request's details, and so its time limit
    PRELIMINARY = "preliminary"
    SIGNED = "signed"
    DELIVERED = "delivered"
    DUE = "due"  # its time limit stored (a consult from before due_at was kept)
    FLAGGED = "flagged"  # near its time limit
    ESCALATED = "escalated"  # past its time limit
    ACKNOWLEDGED = "acknowledged"  # its critical finding, by the township
    MIGRATED = "migrated"  # from the audit trail the rollup followed before this feed


@dataclass(frozen=True)
class ConsultChanged:
    """One change of the feed, as followers see it."""

    consult_id: int
    facility_id: int
    exam_date: date
    change: Change
    at: datetime


def publish(consult: Consult, change: Change, at: datetime | None = None) -> None:
    """Record that `consult` changed; call it inside the transaction that changed it."""
    ConsultChange.objects.create(
        consult_id=consult.pk,
        facility_id=consult.facility_id,
        exam_date=consult.exam_date,
        change=change.value,
        at=at or timezone.now(),
    )


@contextmanager
def taken(limit: int = 5000) -> Iterator[list[ConsultChanged]]:
    """The oldest changes not yet followed (at most `limit`), in a transaction that deletes
    them when the `with` block ends without an exception. On PostgreSQL two followers at
    once take different rows (SKIP LOCKED); on SQLite the transactions take turns."""
    if limit < 1:
        raise ValueError("take at least one change")
    with transaction.atomic():
        rows = list(
            ConsultChange.objects.select_for_update(skip_locked=True)
            .order_by("pk")
            .values_list("pk", "consult_id", "facility_id", "exam_date", "change", "at")[:limit]
        )
        yield [
            ConsultChanged(consult, facility, day, Change(change), at)
            for _pk, consult, facility, day, change, at in rows
        ]
        ids = [row[0] for row in rows]
        for start in range(0, len(ids), _DELETE_BATCH):
            ConsultChange.objects.filter(pk__in=ids[start : start + _DELETE_BATCH]).delete()


def pending() -> int:
    """How many changes wait to be followed (the status page, the tests)."""
    return ConsultChange.objects.count()
