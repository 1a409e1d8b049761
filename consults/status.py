"""The administrators' status page: the platform's parts (cloudpacs.status) and the
consults app's two outboxes, each by its oldest row not yet sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from cloudpacs import status as platform
from consults.models import Notification, ReportDelivery


@dataclass
class Outbox:
    waiting: int
    failed: int
    oldest: ReportDelivery | Notification | None


@dataclass
class PlatformStatus:
    now: datetime
    parts: list[platform.PartState]
    broker: platform.Check | None
    database: platform.Check
    storage: platform.Space | None
    deliveries: Outbox
    notifications: Outbox
    problems: list[str] = field(default_factory=list)


def _outbox(model: type[ReportDelivery] | type[Notification]) -> Outbox:
    unsent = model.objects.exclude(status=model.Status.SENT)
    return Outbox(
        waiting=unsent.exclude(status=model.Status.FAILED).count(),
        failed=unsent.filter(status=model.Status.FAILED).count(),
        oldest=unsent.select_related("consult__facility").order_by("created_at", "id").first(),
    )


def platform_status() -> PlatformStatus:
    now = timezone.now()
    state = PlatformStatus(
        now=now,
        parts=platform.parts(now),
        broker=platform.broker(),
        database=platform.database(),
        storage=platform.storage(),
        deliveries=_outbox(ReportDelivery),
        notifications=_outbox(Notification),
    )
    state.problems = [s.part for s in state.parts if not s.alive]
    if state.broker is not None and not state.broker.ok:
        state.problems.append("broker")
    if state.storage is not None and state.storage.low:
        state.problems.append("storage")
    return state
