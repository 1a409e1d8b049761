"""`manage.py dicomnode`: run the DICOM receiver in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import tempfile
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

from cloudpacs import heartbeat
from cloudpacs.celery import runs_in_process
from cloudpacs.services import resolve_unsynced_files, sweep_orphan_files
from dicomnode.processes import FrontDoor, receiving_dir, run_worker, start_front_door
from dicomnode.server import NoDelayAssociationServer, settle_heap, start_server
from dicomnode.stability import StabilityTimer, SweepProcess

logger = logging.getLogger("dicomnode")


class Command(BaseCommand):
    help = "运行 DICOM 接收服务（C-ECHO、C-STORE），直到收到 SIGTERM 或 Ctrl-C。"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=None, help="listen address (default DICOM_HOST)")
        parser.add_argument("--port", type=int, default=None, help="listen port (default DICOM_PORT)")
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help="worker processes serving associations on the port (default DICOM_RECEIVER_PROCESSES)",
        )
        # A worker process started by the parent (dicomnode.processes): its two sockets and index.
        parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
        parser.add_argument(
            "--no-sweep-timer",
            action="store_true",
            help=(
                "do not ask for the study stability sweep every second from this process;"
                " Celery beat (or manage.py ticker) still asks every 10 s"
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["worker"]:
            handoff, calls, index = (int(part) for part in options["worker"].split(","))
            run_worker(handoff, calls, index, options["host"], options["port"])
            return
        processes = options["processes"] or settings.DICOM_RECEIVER_PROCESSES
        # pynetdicom receives each dataset into a temporary file; keep those on the
        # store's filesystem so that storing one is a rename, not a copy.
        receiving = receiving_dir()
        shutil.rmtree(receiving, ignore_errors=True)
        receiving.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(receiving)
        # Before any worker stores: what an interrupted store left is resolved here only.
        # First the rows committed before their file's fsync returned, then the spool.
        kept, taken_back = resolve_unsynced_files()
        if kept or taken_back:
            logger.warning(
                "%d instances whose file's fsync had not returned before a stop: %d files whole and now"
                " synced, %d lost and unindexed (never acknowledged)",
                kept + taken_back,
                kept,
                taken_back,
            )
        removed = sweep_orphan_files()
        if removed:
            logger.warning("removed %d files left by an interrupted store", removed)
        connection.close()
        server: NoDelayAssociationServer | FrontDoor
        if processes > 1:
            server = start_front_door(options["host"], options["port"], processes)
        else:
            server = start_server(options["host"], options["port"], block=False)
        host, port = server.server_address[:2]
        self.stdout.write(
            f"DICOM receiver {settings.DICOM_AE_TITLE} listening on {host}:{port}"
            + (f" ({processes} processes)" if processes > 1 else ""),
            ending="\n",
        )
        self.stdout.flush()
        # With a broker this process only publishes the sweep; without one the sweep runs
        # in a process of its own, never on the receiver's threads (dicomnode.stability).
        timer: StabilityTimer | SweepProcess | None = None
        if not options["no_sweep_timer"]:
            timer = SweepProcess() if runs_in_process() else StabilityTimer()
            timer.start()
        beats = heartbeat.start("dicomnode", lambda: f"{settings.DICOM_AE_TITLE} {host}:{port}")
        settle_heap()
        stop = threading.Event()

        def _stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            beats.stop()
            if timer is not None:
                timer.stop()
            server.shutdown()
            self.stdout.write("DICOM receiver stopped", ending="\n")
