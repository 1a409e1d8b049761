"""Handing a task to the broker without letting a broker that is down hold anyone up.

Every task the platform queues is about something already saved: an outbox row (a report
to send back, an alert to mail), or a consult that the periodic check also looks at. So a
task the broker does not take is not lost; the next periodic run does the work. What must
not happen is a web request that answers 500, or waits for ever, because Redis is stopped
or frozen after the request's data was committed.

`publish` makes one attempt, bounded by BROKER_TIMEOUT, and never raises. Without a
broker (the embedded default, cloudpacs.celery.runs_in_process) the task runs here and
now, as before, unless it is one only a worker runs (cloudpacs.celery.WorkerOnlyTask)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task
from django.conf import settings
from django.db import transaction

from cloudpacs.celery import runs_in_process

logger = logging.getLogger("cloudpacs")


def send(task: Task, *args: Any) -> None:
    """Publish `task` now over a connection of its own with the broker timeouts, without
    Celery's retries; raises when the broker does not take it. Without a broker the task
    runs in this process."""
    if runs_in_process():
        task.delay(*args)
        return
    timeout = settings.BROKER_TIMEOUT
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "max_retries": 0}
    with task.app.connection_for_write(transport_options=options) as broker:
        task.apply_async(args, connection=broker, retry=False)


def publish(task: Task, *args: Any) -> bool:
    """One attempt to hand `task` to the broker: False, logged, when the broker refused it
    or did not answer within BROKER_TIMEOUT seconds.

    The socket timeouts alone did not bound a publish to a frozen Redis to one timeout:
    kombu reconnects and redis-py re-sends its handshake, four timeouts in all when measured
    (redis-py 8.2, kombu 5.7); `send` turns kombu's retries off. The attempt also runs in a
    thread that this caller waits for at most BROKER_TIMEOUT, whatever the libraries do; a
    thread still waiting ends by its own socket timeouts."""
    if runs_in_process():
        task.delay(*args)
        return True
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            send(task, *args)
        except Exception as error:  # any failure of the broker's libraries counts the same
            failure.append(error)

    thread = threading.Thread(target=attempt, name=f"publish-{task.name}", daemon=True)
    thread.start()
    thread.join(settings.BROKER_TIMEOUT)
    if thread.is_alive():
        logger.warning(
            "task %s%r: the broker did not answer within %s s; the periodic check will do it",
            task.name,
            args,
            settings.BROKER_TIMEOUT,
        )
        return False
    if failure:
        logger.warning(
            "task %s%r: the broker refused it (%s); the periodic check will do it", task.name, args, failure[0]
        )
        return False
    return True


def publish_on_commit(task: Task, *args: Any) -> None:
    """`publish` once the current transaction commits, so the worker finds the rows."""
    transaction.on_commit(lambda: publish(task, *args))
