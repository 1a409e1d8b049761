"""`manage.py alive PART`: exit 0 when PART on this host has written a heartbeat within
three intervals, else 1 with the reason. docker-compose's health check of the receiver,
the worker and beat runs this in their containers."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from cloudpacs.heartbeat import host_name, is_alive
from cloudpacs.models import Heartbeat

PARTS = ("web", "dicomnode", "worker", "beat", "ticker")


class Command(BaseCommand):
    help = "Exit 0 when PART on this host wrote a heartbeat lately (a health check)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("part", choices=PARTS)

    def handle(self, *args: Any, **options: Any) -> None:
        part, host = options["part"], host_name()
        row = Heartbeat.objects.filter(part=part, host=host).first()
        if row is None:
            raise CommandError(f"{part} on {host}: no heartbeat yet")
        age = (timezone.now() - row.at).total_seconds()
        if not is_alive(row):
            raise CommandError(f"{part} on {host}: last heartbeat {age:.0f} s ago (pid {row.pid})")
        self.stdout.write(f"{part} on {host}: alive, pid {row.pid}, last heartbeat {age:.0f} s ago")
