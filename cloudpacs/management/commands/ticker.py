"""`manage.py ticker`: Celery beat's schedule, run in-process, for the embedded default.

Without a broker there is no beat and no worker, yet the per-minute checks (time limits,
critical findings, the savings ledger) must still run. This command reads the same
CELERY_BEAT_SCHEDULE that beat would and runs each task in this process when it is due,
so the two modes run the same periodic work."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery.schedules import BaseSchedule, maybe_schedule
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections
from django.utils import timezone

from cloudpacs import heartbeat
from cloudpacs.celery import app

logger = logging.getLogger("yunying.ticker")


@dataclass
class Entry:
    name: str
    task: str
    schedule: BaseSchedule
    last_run_at: datetime


def due_entries(entries: list[Entry]) -> list[Entry]:
    return [entry for entry in entries if entry.schedule.is_due(entry.last_run_at).is_due]


def run_entry(entry: Entry, now: datetime) -> bool:
    """Run one task here and now; a failure is logged and the ticker goes on."""
    entry.last_run_at = now
    close_old_connections()
    try:
        app.tasks[entry.task].apply(throw=True)
    except Exception:
        logger.exception("periodic task %s (%s) failed", entry.name, entry.task)
        return False
    finally:
        close_old_connections()
    return True


class Command(BaseCommand):
    help = "Run the periodic tasks of CELERY_BEAT_SCHEDULE in-process (no broker needed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run every task once, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        app.loader.import_default_modules()
        now = timezone.now()
        entries = [
            Entry(name, str(spec["task"]), maybe_schedule(spec["schedule"], app=app), now)
            for name, spec in settings.CELERY_BEAT_SCHEDULE.items()
        ]
        unknown = [e.task for e in entries if e.task not in app.tasks]
        if unknown:
            raise CommandError(f"CELERY_BEAT_SCHEDULE names unknown tasks: {', '.join(unknown)}")
        if options["once"]:
            failed = [entry.task for entry in entries if not run_entry(entry, timezone.now())]
            if failed:
                raise CommandError(f"periodic tasks failed: {', '.join(failed)}")
            return

        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"ticker: {len(entries)} periodic tasks in-process: {', '.join(e.task for e in entries)}")
        # From its own thread: a periodic task that takes a while must not look like a dead ticker.
        beats = heartbeat.start("ticker", lambda: f"{len(entries)} periodic tasks")
        try:
            while not stopping:
                for entry in due_entries(entries):
                    run_entry(entry, timezone.now())
                time.sleep(1.0)
        finally:
            beats.stop()
