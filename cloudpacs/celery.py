"""The Celery application, and the one place that says whether there is a broker.

Without CELERY_BROKER_URL, settings set task_always_eager: tasks run in the process that
queues them, so the embedded default needs no broker. With one, they go to the workers.
`runs_in_process()` is the answer everything else asks; code that hands work over just
queues (cloudpacs.publish), and what follows from the answer is decided here:

- a task of `WorkerOnlyTask` (the report's send-back to a township's archive) is not run
  by its caller without a broker: the periodic run that does the same work (the ticker's)
  takes it, so a signature never waits for an archive that is down;
- the study stability sweep runs, without a broker, in a process of its own beside the
  receiver (`manage.py stability_sweep`), never on the receiver's threads; with one, the
  receiver only publishes it (dicomnode.stability);
- beat's schedule runs in Celery beat with a broker, in `manage.py ticker` without one
  (`manage.py platform`).

The worker and beat write heartbeats (cloudpacs.heartbeat) like every other part: the
worker from its own timer, in its main process, so no thread is running when the pool
forks a child; beat, which never forks, from a thread."""

import os
from typing import Any

from celery import Celery, Task, bootsteps
from celery.signals import beat_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")

app = Celery("yunying")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def runs_in_process() -> bool:
    """Broker or no broker: True when tasks run in the process that queues them."""
    return bool(app.conf.task_always_eager)


class WorkerOnlyTask(Task):
    """A task only a worker runs. Without a broker, queuing it does nothing: a periodic
    task does the same work (its rows are saved first), in the ticker, off the caller's
    request. For work that may wait on another machine, such as a C-STORE to an archive."""

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        if runs_in_process():
            return None
        return super().apply_async(*args, **kwargs)


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
