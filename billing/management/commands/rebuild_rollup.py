"""`manage.py rebuild_rollup [--from DATE] [--to DATE]`: recompute the dashboards' daily
rollup from the consults and the ledger, for a range of days or for every day."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import rollup


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from None


class Command(BaseCommand):
    help = "Recompute the dashboards' daily rollup for a range of exam dates (default: every day)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="date_from", type=_date, help="first exam date, YYYY-MM-DD")
        parser.add_argument("--to", dest="date_to", type=_date, help="last exam date, YYYY-MM-DD")

    def handle(self, *args: Any, **options: Any) -> None:
        date_from, date_to = options["date_from"], options["date_to"]
        if date_from and date_to and date_from > date_to:
            raise CommandError("--from is after --to")
        started = time.monotonic()
        rows = rollup.rebuild(date_from, date_to)
        self.stdout.write(f"rollup: {rows} rows in {time.monotonic() - started:.1f} s")
