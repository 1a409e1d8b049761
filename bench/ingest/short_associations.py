#!/usr/bin/env python
"""What an association costs beside its instances: `--associations` storescu runs one
after another, each sending one instance of run.py's set (a) (40 KB) on an association
of its own, as a console that sends each radiograph as it is taken. Prints, per
association, the wall-clock, the receiver's CPU (its process tree) and the CPU of the
PostgreSQL backends of its database (sampled every 20 ms, run.py's WhereSampler: a backend
that ends with its association is counted up to its last sample, so a receiver that opens
one per association is undercounted, by up to 20 ms of a backend's life each).

A new PostgreSQL backend per association costs the database a fork, authentication and
its caches filled, and the statements of every instance prepared again; the receiver
keeps its connections from one association to the next (dicomnode.database).

`--before-repo` also runs another checkout's receiver (the code before a change), the two
alternated `--runs` times, so that the machine's load falls on both alike:

    .venv/bin/python bench/ingest/short_associations.py --associations 40 --runs 3 --before-repo <checkout>
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import free_port, wait_for_port
from run import WhereSampler, generate, push, settle, start_yunying_pg, stop, tree_cpu_split


def measure(start: Any, workdir: Path, files: list[Path], warmup: list[Path]) -> tuple[float, float, float]:
    """(ms wall, ms receiver CPU, ms PostgreSQL CPU) per association."""
    rundir = Path(tempfile.mkdtemp(dir=workdir / "runs"))
    port = free_port()
    process = start(rundir, port)
    try:
        wait_for_port(port, process)
        push(port, warmup, 1)
        settle(process.pid)
        database = urlsplit((rundir / "database_url").read_text()).path.strip("/")
        before = sum(tree_cpu_split(process.pid))
        with WhereSampler(process.pid, database) as where:
            seconds = sum(push(port, [path], 1) for path in files)
        receiver = sum(tree_cpu_split(process.pid)) - before
        postgres = where.cpu_by_label().get("postgres", 0.0)
    finally:
        stop(process)
        shutil.rmtree(rundir, ignore_errors=True)
    count = len(files)
    return seconds * 1000 / count, receiver * 1000 / count, postgres * 1000 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "yunying-bench-ingest")
    parser.add_argument("--associations", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before-repo", type=Path, default=None)
    args = parser.parse_args()
    (args.workdir / "runs").mkdir(parents=True, exist_ok=True)
    sets = {dataset.name: dataset for dataset in generate(args.workdir)}
    files = sets["a"].files[: args.associations]
    receivers = {"after": start_yunying_pg(args.workdir, 1)}
    if args.before_repo:
        receivers["before"] = start_yunying_pg(args.workdir, 1, args.before_repo)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in receivers}
    print(f"load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
    for _ in range(args.runs):
        for name, start in receivers.items():
            results[name].append(measure(start, args.workdir, files, sets["warmup"].files))
            wall, receiver, postgres = results[name][-1]
            print(
                f"{name}: {wall:.1f} ms/association, receiver CPU {receiver:.2f} ms, PostgreSQL CPU {postgres:.2f} ms"
                f" (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    for name, runs in results.items():
        wall, receiver, postgres = (statistics.median(run[i] for run in runs) for i in range(3))
        print(
            f"median of {len(runs)}, {name}: {wall:.1f} ms/association, receiver CPU {receiver:.2f} ms,"
            f" PostgreSQL CPU {postgres:.2f} ms"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
