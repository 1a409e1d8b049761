#!/usr/bin/env python
"""One association over one and two receiver processes, alternately: where its time goes
between running and waiting for a core.

run.py gives each push's rate and CPU; with one association the sender waits for every
answer, so the rate also depends on how long each of the receiver's threads waits in the
kernel's run queue after it is woken, which CPU time does not show. This reads
/proc/<pid>/task/<tid>/schedstat (time on a CPU, time runnable but waiting for one) of
every thread of the receiver's process tree and of the PostgreSQL backends of the run's
database, every 20 ms during the push (an association's threads end with it), and prints
per instance, for each push, the CPU and run-queue wait of the receiver's whole tree, of
each of its processes (main: the receiver, or with workers their parent; each worker; the
stability sweep) and of the backends.

    .venv/bin/python bench/ingest/run_queue.py [--rounds 4] [--processes 1,2] [--set a]

Each push is set (a) (or (b)) into a new receiver on PostgreSQL, after run.py's warm-up
study, as run.py does; rounds alternate the process counts, so a change in the machine's
load falls on both alike. Needs a PostgreSQL server on the local socket, like run.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import run as bench


def schedstats(pids: list[int]) -> dict[int, tuple[int, int, int]]:
    """(process id, ns on a CPU, ns waiting for one) of each thread of `pids`, by thread id."""
    found = {}
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                    running, waiting, _ = (int(field) for field in stat.read().split())
            except (OSError, ValueError):
                continue
            found[int(tid)] = (pid, running, waiting)
    return found


class Sampler:
    """The threads' counters at the start and the last seen of each, sampled every 20 ms."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.first = schedstats(pids)
        self.last = dict(self.first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.last.update(schedstats(self.pids))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(schedstats(self.pids))

    def of(self, pids: set[int]) -> tuple[float, float]:
        """ms on a CPU and ms waiting for one, over the threads of `pids`."""
        running = waiting = 0
        for tid, (pid, ran, waited) in self.last.items():
            if pid in pids:
                _, ran_before, waited_before = self.first.get(tid, (pid, 0, 0))
                running += ran - ran_before
                waiting += waited - waited_before
        return running / 1e6, waiting / 1e6


def role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as cmdline:
            words = cmdline.read().split("\0")
    except OSError:
        return "gone"
    if "stability_sweep" in words:
        return "sweep"
    if "--worker" in words:
        return "worker " + words[words.index("--worker") + 1].rsplit(",", 1)[-1]
    # The process started: the receiver itself, or the parent of its workers.
    return "main"


def backends(database: str) -> set[int]:
    out = bench.psql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", database
    )
    return {int(line) for line in out.split() if line.strip().isdigit()}


def push_once(dataset: Any, warmup: Any, workdir: Path, processes: int) -> dict[str, float]:
    rundir = Path(tempfile.mkdtemp(dir=workdir / "runs"))
    port = bench.free_port()
    process = bench.start_yunying_pg(workdir, processes)(rundir, port)
    try:
        bench.wait_for_port(port, process)
        bench.push(port, warmup.files, 1)
        bench.wait_handed_over("yunying-postgresql", rundir)
        bench.settle(process.pid)
        tree = bench.tree_pids(process.pid)
        database = urlsplit((rundir / "database_url").read_text()).path.strip("/")
        database_pids = backends(database)
        with Sampler(sorted(set(tree) | database_pids)) as sampler:
            seconds = bench.push(port, dataset.files, 1)
        count = len(dataset.files)
        row = {"inst/s": count / seconds, "load": os.getloadavg()[0]}
        running, waiting = sampler.of(set(tree))
        row["tree cpu"], row["tree wait"] = running / count, waiting / count
        for pid in tree:
            running, waiting = sampler.of({pid})
            row[f"{role(pid)} cpu"], row[f"{role(pid)} wait"] = running / count, waiting / count
        running, waiting = sampler.of(database_pids)
        row["postgres cpu"], row["postgres wait"] = running / count, waiting / count
        return row
    finally:
        bench.stop(process)
        subprocess.run(["rm", "-rf", str(rundir)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--processes", default="1,2", help="DICOM_RECEIVER_PROCESSES values, alternated")
    parser.add_argument("--set", choices=["a", "b"], default="a")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "yunying-run-queue")
    args = parser.parse_args()
    (args.workdir / "runs").mkdir(parents=True, exist_ok=True)
    generated = bench.generate(args.workdir)
    dataset = next(s for s in generated if s.name == args.set)
    warmup = next(s for s in generated if s.name == "warmup")
    counts = [int(n) for n in args.processes.split(",")]
    rows: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for processes in counts:
            row = push_once(dataset, warmup, args.workdir, processes)
            rows[processes].append(row)
            print(f"{processes} process(es): " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    print("medians, ms per instance (inst/s and load as they are):")
    for processes, measured in rows.items():
        keys = [k for k in measured[0] if all(k in m for m in measured)]
        print(
            f"{processes} process(es): "
            + ", ".join(f"{k} {statistics.median(m[k] for m in measured):.2f}" for k in keys)
        )


if __name__ == "__main__":
    main()
