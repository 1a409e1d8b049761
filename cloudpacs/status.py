"""What the administrators' status page shows about the platform's parts: each part's
last heartbeat, the broker and the database as they answer now, and the image store's
free space. The consults app adds its outboxes (consults.views.pages.platform_status)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext as _

from cloudpacs.heartbeat import is_alive
from cloudpacs.models import Heartbeat


def part_labels() -> dict[str, str]:
    return {
        "web": _("网页服务"),
        "dicomnode": _("DICOM 接收"),
        "worker": _("任务进程（Celery worker）"),
        "beat": _("定时任务（Celery beat）"),
        "ticker": _("定时任务（进程内）"),
        "sweep": _("检查稳定扫描（进程内）"),
    }


def expected_parts() -> list[str]:
    """The parts this configuration runs: with a broker, a worker and beat; without one,
    the ticker and the receiver's stability sweep process in their place."""
    return ["web", "dicomnode", *(["worker", "beat"] if settings.CELERY_BROKER_URL else ["ticker", "sweep"])]


@dataclass
class PartState:
    part: str
    label: str
    alive: bool
    row: Heartbeat | None


def parts(now: datetime | None = None) -> list[PartState]:
    """Every expected part, and any other that beats, one line per part and host; a part
    never heard from has a line without a row."""
    now = now or timezone.now()
    labels = part_labels()
    rows = list(Heartbeat.objects.order_by("part", "host"))
    states: list[PartState] = []
    for part in expected_parts() + sorted({r.part for r in rows} - set(expected_parts())):
        mine = [r for r in rows if r.part == part]
        if not mine:
            states.append(PartState(part, labels.get(part, part), False, None))
        states += [PartState(part, labels.get(part, part), is_alive(r, now), r) for r in mine]
    return states


@dataclass
class Check:
    ok: bool
    text: str
    milliseconds: float | None = None


def _within(seconds: float, probe: Callable[[], Check]) -> Check:
    """Run `probe` (a callable returning a Check) in a thread, giving up after `seconds`."""
    result: list[Check] = []

    def run() -> None:
        started = time.monotonic()
        try:
            check = probe()
        except Exception as error:
            check = Check(False, f"{type(error).__name__}: {error}"[:200])
        check.milliseconds = (time.monotonic() - started) * 1000
        result.append(check)

    thread = threading.Thread(target=run, name="status-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        return Check(False, _("%(seconds)s 秒内无应答") % {"seconds": seconds})
    return result[0]


def broker() -> Check | None:
    """The broker answering a PING now, within BROKER_TIMEOUT; None without a broker."""
    url = settings.CELERY_BROKER_URL
    if not url:
        return None
    if url.startswith("memory://"):
        return Check(True, "memory://")

    def ping() -> Check:
        import redis

        timeout = settings.BROKER_TIMEOUT
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return Check(True, "PONG")

    return _within(settings.BROKER_TIMEOUT, ping)


def database() -> Check:
    """The database answering a query now (this page could not be served without it, but
    the time it takes is worth seeing)."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    engine = str(settings.DATABASES["default"]["ENGINE"]).rsplit(".", 1)[-1]
    return Check(True, engine, (time.monotonic() - started) * 1000)


@dataclass
class Space:
    path: Path
    free: int
    total: int
    low: bool

    @property
    def free_share(self) -> float:
        return self.free / self.total if self.total else 0.0


def storage() -> Space | None:
    """Free space on the image store's filesystem, as this process sees it; None when the
    store's folder does not exist here."""
    root = Path(settings.STORAGE_ROOT)
    if not root.exists():
        return None
    usage = shutil.disk_usage(root)
    return Space(
        root, usage.free, usage.total, usage.total > 0 and usage.free / usage.total < settings.STORAGE_FREE_WARNING
    )
