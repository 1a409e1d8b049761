#!/usr/bin/env python
"""How fast the machine's cores run, measured beside a push: one thread pinned to each CPU
does the same small piece of Python work every `--interval` seconds and notes its own CPU
time for it (`time.thread_time`). Waiting for a core does not enter that time; a core that
runs slower does: on this project's virtual machines each core's speed flips between two
levels about 1.8x apart every second or so, each core on its own (docs/benchmarks-ingest.md,
run 26), which a push of one or two seconds cannot average out.

Run by `SpeedProbe` (run.py, run_queue.py) as a process of its own for the push's length:
it prints, when its standard input closes, one JSON object {cpu: [µs, ...]}. The work is
about 2 x 0.5 ms on a fast core every 100 ms: 1 % of each core.

    .venv/bin/python bench/ingest/speed_probe.py [--interval 0.1] < /dev/null
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def work() -> int:
    total = 0
    for number in range(WORK):
        total += number * number % 7
    return total


# About 0.5 ms on a fast core. The work is done twice and the second time kept: the first,
# right after the thread wakes, also pays for caches that other processes filled.
WORK = 10_000


def probe(cpu: int, interval: float, stop: threading.Event, samples: list[float]) -> None:
    os.sched_setaffinity(0, {cpu})  # this thread only (Linux)
    while not stop.wait(interval):
        work()
        started = time.thread_time_ns()
        work()
        samples.append((time.thread_time_ns() - started) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    stop = threading.Event()
    found: dict[int, list[float]] = {cpu: [] for cpu in sorted(os.sched_getaffinity(0))}
    threads = [
        threading.Thread(target=probe, args=(cpu, args.interval, stop, samples), daemon=True)
        for cpu, samples in found.items()
    ]
    for thread in threads:
        thread.start()
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join()
    print(json.dumps(found))


# Samples per window: a window's lowest is its core's speed then. On a loaded machine most
# samples are also slowed by what other processes left in the core's caches, and some are
# preempted half-way; the lowest of five is much less so.
WINDOW = 5


class SpeedProbe:
    """The probe above as a context manager around a push. `windows` holds the lowest
    sample of each WINDOW samples (half a second) of each core; `median_us` is their median
    (lower is faster), `slow_share` the share of them more than 1.4x `fastest` (by default
    the lowest here): the time a core spent in its slow phase."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: dict[str, list[float]] = {}

    def __enter__(self) -> SpeedProbe:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), "--interval", str(self.interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._process.communicate("", timeout=30)
        try:
            self.samples = json.loads(out)
        except ValueError:
            self.samples = {}

    @property
    def windows(self) -> list[float]:
        return [
            min(values[start : start + WINDOW])
            for values in self.samples.values()
            for start in range(0, len(values), WINDOW)
        ]

    @property
    def median_us(self) -> float:
        values = self.windows
        return statistics.median(values) if values else float("nan")

    def slow_share(self, fastest: float | None = None) -> float:
        values = self.windows
        if not values:
            return float("nan")
        floor = fastest if fastest is not None else min(values)
        return sum(1 for value in values if value > 1.4 * floor) / len(values)


if __name__ == "__main__":
    main()
