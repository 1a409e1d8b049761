"""The receiver's clock for study stability: once a second it asks for a sweep.

Without a broker the task runs eagerly in this thread; with one, a worker runs it. The
task is looked up by name in the Celery registry, so the receiver does not import the
consults app that sits above the archive."""

from __future__ import annotations

import logging
import threading

from celery import Celery, Task
from django.conf import settings
from django.db import connection
from django.utils import timezone

from cloudpacs.publish import send
from cloudpacs.services import has_stable_studies

logger = logging.getLogger("dicomnode")

SWEEP_TASK = "consults.tasks.sweep_stable_studies"


class StabilityTimer:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stability-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from cloudpacs.celery import app

        app.loader.import_default_modules()
        task = app.tasks[SWEEP_TASK]
        while not self._stop.wait(self.interval):
            try:
                # A cheap read first, so that an idle receiver sends no task to a broker.
                if has_stable_studies(timezone.now(), settings.STUDY_STABLE_SECONDS):
                    self._send(app, task)
            except Exception:
                logger.exception("study stability sweep failed")
                # Reconnect next time; otherwise the thread keeps its one connection.
                connection.close()
        connection.close()

    @staticmethod
    def _send(app: Celery, task: Task) -> None:
        # Raises when the broker does not take it (logged above); sent again next tick.
        send(task)


def request_sweep() -> None:
    """Ask for a sweep now rather than at the next tick: a console reported a step
    completed (MPPS), and its study may have arrived. With a broker the task is published;
    without one it runs on a thread of its own, so that the console's N-SET is answered
    without waiting for the consult and the metadata. Never raises: the timer's next tick
    asks again anyway."""
    from cloudpacs.celery import app

    try:
        app.loader.import_default_modules()
        task = app.tasks[SWEEP_TASK]
        if app.conf.task_always_eager:
            threading.Thread(target=_sweep_now, args=(task,), name="mpps-sweep", daemon=True).start()
        else:
            send(task)
    except Exception:
        logger.exception("could not ask for a stability sweep")


def _sweep_now(task: Task) -> None:
    try:
        task.delay()
    except Exception:
        logger.exception("study stability sweep failed")
    finally:
        connection.close()
