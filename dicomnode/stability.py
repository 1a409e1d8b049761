"""The receiver's clock for study stability: once a second it asks for a sweep.

Whether there is a broker is the Celery configuration's to say
(cloudpacs.celery.runs_in_process); this module only queues the task, and the receiver
(`manage.py dicomnode`) starts the clock that answer calls for. With a broker the timer
is a thread of the receiver that only publishes the task (a read and a publish each
second); a worker runs it. Without one the task runs eagerly wherever it is queued, and
the sweep (claiming studies, opening consults, computing the WADO-RS metadata of every
instance) must not run in the receiver: on its interpreter lock its threads would wait
for the GIL behind the sweep's Python work, and its database work would sit beside the
C-STOREs'. So without a broker the receiver starts the timer in a process of its own,
`manage.py stability_sweep` (SweepProcess), and keeps it running.

The task is looked up by name in the Celery registry, so the receiver does not import
the consults app that sits above the archive."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from celery import Celery, Task
from django.conf import settings
from django.db import connection
from django.utils import timezone

from cloudpacs.heartbeat import HeartbeatThread
from cloudpacs.publish import publish, send
from cloudpacs.services import has_stable_studies

logger = logging.getLogger("dicomnode")

SWEEP_TASK = "consults.tasks.sweep_stable_studies"
# A sweep process that exits is started again after this.
RESTART_DELAY = 2.0


class StabilityTimer:
    """With `heartbeat_part`, the loop itself writes that part's heartbeat (between ticks,
    every HEARTBEAT_SECONDS): a sweep stuck in the database stops the beats, which a
    heartbeat thread beside a stuck loop would not."""

    def __init__(self, interval: float = 1.0, heartbeat_part: str | None = None) -> None:
        self.interval = interval
        self.sweeps = 0
        self._beats = HeartbeatThread(heartbeat_part, self._detail) if heartbeat_part else None
        self._last_beat = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self.run, name="stability-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.request_stop()
        self._thread.join(timeout=10)

    def request_stop(self) -> None:
        """Make run() return after the current tick (from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Tick now rather than at the end of the interval (from a signal handler)."""
        self._wake.set()

    def run(self, parent: int | None = None) -> None:
        """Tick until stopped, or (with `parent`) until that process is gone."""
        from cloudpacs.celery import app

        app.loader.import_default_modules()
        task = app.tasks[SWEEP_TASK]
        while True:
            self._beat()
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            if parent is not None and os.getppid() != parent:
                logger.info("the receiver is gone; the stability sweep stops")
                break
            try:
                # A cheap read first, so that an idle receiver sends no task to a broker.
                if has_stable_studies(timezone.now(), settings.STUDY_STABLE_SECONDS):
                    self._send(app, task)
                    self.sweeps += 1
            except Exception:
                logger.exception("study stability sweep failed")
                # Reconnect next time; otherwise the thread keeps its one connection.
                connection.close()
        connection.close()

    def _beat(self) -> None:
        if self._beats is not None and time.monotonic() - self._last_beat >= settings.HEARTBEAT_SECONDS:
            self._beats.beat_once()
            self._last_beat = time.monotonic()

    def _detail(self) -> str:
        return f"{self.sweeps} sweeps"

    @staticmethod
    def _send(app: Celery, task: Task) -> None:
        # Raises when the broker does not take it (logged above); sent again next tick.
        send(task)


class SweepProcess:
    """`manage.py stability_sweep` as a child of the receiver, started again if it exits,
    stopped with the receiver. It stops by itself when the receiver dies."""

    # The one started by this process, for request_sweep.
    running: SweepProcess | None = None

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stability-sweep-process", daemon=True)

    def start(self) -> None:
        """From the main thread. The child inherits SIGUSR1 ignored, so that a wake before
        it has set its handler (Django takes seconds to start) does not end it."""
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self._spawn()
        self._thread.start()
        SweepProcess.running = self

    def wake(self) -> bool:
        """Have the sweep process sweep now; False when it is not running."""
        process = self.process
        if process is None or process.poll() is not None:
            return False
        try:
            process.send_signal(signal.SIGUSR1)
        except OSError:
            return False
        return True

    def _spawn(self) -> None:
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, manage, "stability_sweep", "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def _watch(self) -> None:
        while not self._stop.wait(RESTART_DELAY):
            process = self.process
            if process is not None and process.poll() is not None:
                logger.error("the stability sweep process exited with %s; starting it again", process.returncode)
                self._spawn()

    def stop(self) -> None:
        SweepProcess.running = None
        self._stop.set()
        self._thread.join(timeout=10)
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def request_sweep() -> None:
    """Ask for a sweep now rather than at the next tick: a console reported a step
    completed (MPPS), and its study may have arrived. Called on an association's thread,
    which must answer the N-SET without waiting for consults and metadata: the receiver's
    sweep process, where it has one, is woken (SIGUSR1); otherwise the task is queued on a
    thread of its own, which publishes it to the broker, or, without one, runs the sweep
    there (a receiver started in-process, as the tests do). Never raises: the timer's next
    tick asks again anyway."""
    sweeper = SweepProcess.running
    if sweeper is not None and sweeper.wake():
        return
    try:
        threading.Thread(target=_sweep_now, name="mpps-sweep", daemon=True).start()
    except Exception:
        logger.exception("could not ask for a stability sweep")


def _sweep_now() -> None:
    from cloudpacs.celery import app

    try:
        app.loader.import_default_modules()
        # Bounded by BROKER_TIMEOUT and never raising with a broker; the sweep itself without.
        publish(app.tasks[SWEEP_TASK])
    except Exception:
        logger.exception("study stability sweep failed")
    finally:
        connection.close()
