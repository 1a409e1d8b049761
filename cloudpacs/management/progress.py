"""A progress bar and a checkpoint for the commands that walk a whole archive
(storage_copy, storage_verify): a province's archive takes hours, so a run shows how far
it is and, stopped, resumes where it was."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import OutputWrapper

WIDTH = 30


class ProgressBar:
    """`[#####.....]  1234/5678 22%  41.0 MB/s`, redrawn in place at most twice a second."""

    def __init__(self, out: OutputWrapper, total: int, done: int = 0) -> None:
        self.out = out
        self.total = max(total, 0)
        self.done = done
        self.bytes = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def advance(self, size: int = 0) -> None:
        self.done += 1
        self.bytes += size
        now = time.monotonic()
        if now - self.shown >= 0.5 or self.done >= self.total:
            self.shown = now
            self.draw()

    def draw(self) -> None:
        share = self.done / self.total if self.total else 1.0
        filled = int(WIDTH * min(share, 1.0))
        rate = self.bytes / max(time.monotonic() - self.started, 1e-6) / 1e6
        self.out.write(
            f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} {share:4.0%} {rate:6.1f} MB/s",
            ending="",
        )
        self.out.flush()

    def close(self) -> None:
        self.draw()
        self.out.write("")
        self.out.flush()


class Checkpoint:
    """The state of a command's walk, in a small JSON file under STORAGE_ROOT (a dot
    directory, which the walks over stored files skip), written every few seconds."""

    def __init__(self, name: str) -> None:
        self.path = Path(settings.STORAGE_ROOT) / ".commands" / f"{name}.json"
        self.written = 0.0

    def load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}

    def save(self, state: dict[str, Any], *, now: bool = False) -> None:
        if not now and time.monotonic() - self.written < 2.0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        temp.write_text(json.dumps(state))
        temp.replace(self.path)
        self.written = time.monotonic()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
