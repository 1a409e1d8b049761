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

from cloudpacs.services import has_stable_studies

logger = logging.getLogger("dicomnode")

SWEEP_TASK = "consults.tasks.sweep_stable_studies"
# A broker that accepts connections but does not answer (a stopped Redis, or one behind a
# half-open connection) would block a publish, and so the sweep, for ever. The task is
# sent again on the next tick anyway, so a publish gives up after this and is not retried.
PUBLISH_TIMEOUT = 2.0


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
        if app.conf.task_always_eager:
            task.delay()
            return
        timeouts = {"socket_timeout": PUBLISH_TIMEOUT, "socket_connect_timeout": PUBLISH_TIMEOUT}
        with app.connection_for_write(transport_options=timeouts) as broker:
            task.apply_async(connection=broker, retry=False)
