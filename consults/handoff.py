"""Handing work to a Celery worker once a step's transaction commits, without importing
consults.tasks.

The workflow and the services sit below consults.tasks, which imports them; they cannot
import it back. They hand work over through these typed slots instead, which
consults.tasks fills with its tasks when it is imported (the app's `ready()` imports it,
so every process that runs a step has them). Each slot takes the primary key of a row
already saved, and mypy checks both the callers and what tasks.py puts in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Handoff = Callable[[int], None]


def _not_wired(name: str) -> Handoff:
    def refuse(pk: int) -> None:
        raise RuntimeError(f"consults.tasks is not imported: nothing hands {name} over (row {pk})")

    return refuse


@dataclass
class Slots:
    assign_consult: Handoff
    deliver_report: Handoff
    send_notification: Handoff


slots = Slots(
    assign_consult=_not_wired("assign_consult"),
    deliver_report=_not_wired("deliver_report"),
    send_notification=_not_wired("send_notification"),
)
