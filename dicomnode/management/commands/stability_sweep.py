"""`manage.py stability_sweep`: the study stability sweep every second, in this process.

Started by `manage.py dicomnode` when there is no broker, so that the sweep runs beside
the receiver, not inside it (dicomnode.stability); it can also run on its own, for a
receiver started with --no-sweep-timer."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dicomnode.stability import StabilityTimer


class Command(BaseCommand):
    help = "每秒检查一次稳定的检查并为其创建会诊（无消息队列时在本进程中执行）。"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--parent", type=int, default=None, help="stop when this process (the receiver) is gone")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between sweeps (default 1)")

    def handle(self, *args: Any, **options: Any) -> None:
        timer = StabilityTimer(options["interval"], heartbeat_part="sweep")

        def _stop(signum: int, frame: object) -> None:
            timer.request_stop()

        def _wake(signum: int, frame: object) -> None:
            timer.wake()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        # The receiver asks for a sweep now (a console reported its images complete, MPPS).
        signal.signal(signal.SIGUSR1, _wake)
        timer.run(parent=options["parent"])
