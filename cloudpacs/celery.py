"""The Celery application. Without CELERY_BROKER_URL tasks run eagerly in-process
(settings set task_always_eager), so the embedded default needs no broker.

The worker and beat write heartbeats (cloudpacs.heartbeat) like every other part: the
worker from its own timer, in its main process, so no thread is running when the pool
forks a child; beat, which never forks, from a thread."""

import os
from typing import Any

from celery import Celery, bootsteps
from celery.signals import beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")

app = Celery("yunying")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class WorkerHeartbeat(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.timer_entry: Any = None
        self.beats: Any = None

    def start(self, worker: Any) -> None:
        from django.conf import settings

        from cloudpacs.heartbeat import HeartbeatThread

        # Not started as a thread: its beat_once runs on the worker's timer.
        self.beats = HeartbeatThread("worker", lambda: f"{worker.hostname} concurrency {worker.concurrency}")
        self.beats.beat_once()
        self.timer_entry = worker.timer.call_repeatedly(settings.HEARTBEAT_SECONDS, self.beats.beat_once)

    def stop(self, worker: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()


app.steps["worker"].add(WorkerHeartbeat)


@beat_init.connect
def _beat_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    from cloudpacs import heartbeat

    heartbeat.start("beat")
