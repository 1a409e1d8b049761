"""The reading workflow's per-minute check (assignment, time limits, off-duty readers,
unacknowledged critical findings) without Celery beat: once, or in a loop with --every.
Each run also sends the alert e-mails of the outbox whose time has come, so an alert whose
first attempt failed is not left waiting for a ticker that this deployment may not run.

With a broker, Celery beat sends consults.tasks.check_consult_deadlines every minute
(settings.CELERY_BEAT_SCHEDULE); the embedded default has no beat, so the platform runs
this command beside the web server and the receiver."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from consults import notifications, workflow


class Command(BaseCommand):
    help = "Run the consults' periodic check once, or every N seconds with --every."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=float, default=0.0, help="repeat every this many seconds")

    def handle(self, *args: Any, every: float = 0.0, **options: Any) -> None:
        while True:
            result = workflow.check_consult_deadlines()
            mailed = notifications.send_due()
            if options.get("verbosity", 1) >= 2 or not every:
                self.stdout.write(
                    f"assigned={len(result.assigned)} off_duty={len(result.reassigned_off_duty)} "
                    f"flagged={len(result.flagged)} escalated={len(result.escalated)} "
                    f"critical_escalated={len(result.critical_escalated)} "
                    f"alerts_sent={sum(status == 'sent' for status in mailed.values())}"
                )
            if not every:
                return
            time.sleep(every)
            # A long-running loop: drop connections the database may have timed out.
            close_old_connections()
