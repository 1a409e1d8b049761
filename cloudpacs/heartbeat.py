"""Heartbeats: each long-running part of the platform says every HEARTBEAT_SECONDS that
it is alive, in one row per part and host (cloudpacs.models.Heartbeat). The status page
and `manage.py alive` (docker-compose's health check) read them; a part whose last beat
is older than STALE_BEATS intervals is shown as down.

A beat that cannot be written (the database is down) is logged once per outage and tried
again at the next interval: a heartbeat must never stop the part that sends it."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from cloudpacs.models import Heartbeat

logger = logging.getLogger("cloudpacs")

# Missing this many beats in a row makes a part count as down.
STALE_BEATS = 3
# Rows of parts not heard from for this long (a container removed, a host renamed) are dropped.
FORGET_AFTER = timedelta(days=1)

_started_at = timezone.now()


def host_name() -> str:
    return socket.gethostname()[:255]


def beat(part: str, detail: str = "", now: datetime | None = None, *, forget: bool = False) -> None:
    """Write this process's beat for `part` (one row per part and host; a restarted
    process takes the row over with its own pid and start time). With `forget`, also drop
    the rows of `part` not heard from for FORGET_AFTER (done once, when a part starts:
    on SQLite every write takes the one write lock the receiver needs too)."""
    now = now or timezone.now()
    Heartbeat.objects.update_or_create(
        part=part,
        host=host_name(),
        defaults={"pid": os.getpid(), "started_at": _started_at, "at": now, "detail": detail[:255]},
    )
    if forget:
        Heartbeat.objects.filter(part=part, at__lt=now - FORGET_AFTER).delete()


def stale_after() -> timedelta:
    return timedelta(seconds=STALE_BEATS * settings.HEARTBEAT_SECONDS)


def is_alive(row: Heartbeat, now: datetime | None = None) -> bool:
    return (now or timezone.now()) - row.at <= stale_after()


class HeartbeatThread:
    """Beats for `part` from a daemon thread until `stop`; `detail` is asked each time."""

    def __init__(self, part: str, detail: Callable[[], str] | None = None) -> None:
        self.part = part
        self.detail = detail or (lambda: "")
        self._stop = threading.Event()
        self._failing = False
        self._beaten = False
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{part}", daemon=True)

    def start(self) -> HeartbeatThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def beat_once(self) -> None:
        close_old_connections()
        try:
            beat(self.part, self.detail(), forget=not self._beaten)
            self._beaten = True
        except DatabaseError as error:
            if not self._failing:
                logger.warning("heartbeat of %s not written: %s", self.part, error)
            self._failing = True
            connection.close()
            return
        if self._failing:
            logger.info("heartbeat of %s written again", self.part)
        self._failing = False

    def _run(self) -> None:
        self.beat_once()
        while not self._stop.wait(settings.HEARTBEAT_SECONDS):
            self.beat_once()
        connection.close()


def start(part: str, detail: Callable[[], str] | None = None) -> HeartbeatThread:
    return HeartbeatThread(part, detail).start()
