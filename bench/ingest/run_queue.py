#!/usr/bin/env python
"""Pushes over one and two receiver processes, alternately: where their time goes between
running and waiting for a core, and which worker served each association.

run.py gives each push's rate and CPU; with one association the sender waits for every
answer, so the rate also depends on how long each of the receiver's threads waits in the
kernel's run queue after it is woken, which CPU time does not show. This samples, every
25 ms during the push (an association's threads end with it), every thread of the
receiver's process tree, of the storescu clients and of the PostgreSQL backends of the
run's database: /proc/<pid>/task/<tid>/schedstat (time on a CPU, time runnable but waiting
for one) and .../sched (voluntary and involuntary context switches, moves between CPUs).
It also notes, from the workers' descriptors, which worker holds each association's
connection, over the push the machine's idle and stolen time (/proc/stat: a virtual
machine's cores may be taken by its host), and how fast its cores ran (speed_probe.py: on
these virtual machines each core flips between two speeds about 1.8x apart).

Per push it prints the rate and, per instance, for the receiver's tree, each of its
processes (main: the receiver, or with workers their parent; each worker with the number
of associations it served; the stability sweep), the backends and storescu: ms on a CPU,
ms waiting for one, voluntary / involuntary switches and migrations; then medians.

Beside the rate (from the clients' start to their exit), `wire inst/s` is the rate at the
server's side of the wire (wire.py: from the first A-ASSOCIATE-RQ to the last C-STORE
answer), with the first client's start-up before its request (`wire start ms`), the
spread of the associations' requests and the rate while every association was open
(`wire steady inst/s`). `budget` adds up the cores' time over the push, ms per instance
(accounting.py): `cores` (CPUs x the window; `window ms` is the window itself), the
receiver, the run's backends, storescu (its exit status), kernel threads by prefix, the
bench itself (its process, its snapshots, its children: the speed probe), PostgreSQL's
other processes, everything else (`rest`, with its busiest process names on the line
after), processes that ended (`ended`), idle, steal, and `unseen` (threads that ended
unwatched, the idle's 10 ms ticks).

    .venv/bin/python bench/ingest/run_queue.py [--rounds 4] [--processes 1,2] [--parallel 1,4]
        [--set a] [--warm as-push,one]

Each push is set (a) (or (b)) into a new receiver on PostgreSQL, after run.py's warm-up
(as many associations at once as the push, at least one per receiver process, so that
every worker has served and kept its database connections before the timed push: `--warm
one` sends one association, as run.py did before run 26); rounds alternate the
configurations, so a change in the machine's load falls on all alike. Needs a PostgreSQL
server on the local socket, like run.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import accounting
import run as bench
from speed_probe import SpeedProbe
from wire import WireTap

# The probe's work on a fast core of the machines this was written on (its lowest over
# many pushes): a probe's window more than 1.4x this is a core in its slow phase.
FASTEST_PROBE_US = 560.0

# Counters of one thread: ns on a CPU, ns runnable waiting for one, voluntary switches,
# involuntary switches, migrations between CPUs.
FIELDS = ("cpu", "wait", "vol", "invol", "migr")
SCHED_KEYS = {"nr_voluntary_switches": 2, "nr_involuntary_switches": 3, "se.nr_migrations": 4}


def thread_counters(pid: int, tid: str) -> list[int] | None:
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/schedstat") as stat:
            running, waiting, _ = (int(field) for field in stat.read().split())
        counters = [running, waiting, 0, 0, 0]
        with open(f"{base}/sched") as sched:
            for line in sched:
                key, _, value = line.partition(":")
                index = SCHED_KEYS.get(key.strip())
                if index is not None:
                    counters[index] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return counters


def sample(pids: list[int]) -> dict[int, tuple[int, list[int]]]:
    """(process id, counters) of each thread of `pids`, by thread id."""
    found = {}
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            counters = thread_counters(pid, tid)
            if counters is not None:
                found[int(tid)] = (pid, counters)
    return found


def machine_times() -> list[int]:
    """/proc/stat's first line: user, nice, system, idle, iowait, irq, softirq, steal (ticks)."""
    with open("/proc/stat") as stat:
        return [int(field) for field in stat.readline().split()[1:9]]


def connection_inodes(port: int) -> dict[int, int]:
    """Socket inode -> peer port of the TCP connections whose local port is `port`."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], int(fields[9])
                    if inode and int(local.rsplit(":", 1)[1], 16) == port:
                        found[inode] = int(remote.rsplit(":", 1)[1], 16)
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return found


def socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


class Sampler:
    """Every thread's counters at the start and the last seen of each; which receiver
    process held each connection to `port` (by the peer's port)."""

    def __init__(self, pids: list[int], port: int, database: str, interval: float = 0.025) -> None:
        self.pids = list(pids)
        self.port = port
        self.database = database
        self.postmaster = bench.postmaster_pid()
        # The run's PostgreSQL backends, those that the push opens included.
        self.backends = {pid for pid in self.pids if self._is_backend(pid)}
        self.interval = interval
        self.first = sample(self.pids)
        self.last = dict(self.first)
        self.served: dict[int, set[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, pids: list[int]) -> None:
        """Processes started after the sampler (storescu): counted from zero."""
        with self._lock:
            self.pids.extend(pids)

    def _run(self) -> None:
        turn = 0
        while not self._stop.wait(self.interval):
            with self._lock:
                pids = list(self.pids)
            self.last.update(sample(pids))
            if turn % 4 == 0:
                self._note_connections()
                self._note_backends()
            turn += 1

    def _is_backend(self, pid: int) -> bool:
        args = bench.command_line(pid)
        return bool(args) and args[0].startswith("postgres:") and f" {self.database} " in args[0]

    def _note_backends(self) -> None:
        if self.postmaster is None:
            return
        for pid in bench.tree_pids(self.postmaster)[1:]:
            if pid not in self.backends and self._is_backend(pid):
                self.backends.add(pid)
                with self._lock:
                    self.pids.append(pid)

    def _note_connections(self) -> None:
        inodes = connection_inodes(self.port)
        if not inodes:
            return
        for pid in self.pids:
            held = socket_inodes(pid) & inodes.keys()
            if held:
                self.served.setdefault(pid, set()).update(inodes[inode] for inode in held)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self.last.update(sample(self.pids))

    def of(self, pids: set[int]) -> list[float]:
        """cpu ms, wait ms, voluntary, involuntary switches, migrations over the threads of `pids`."""
        totals = [0.0] * len(FIELDS)
        for tid, (pid, counters) in self.last.items():
            if pid in pids:
                _, before = self.first.get(tid, (pid, [0] * len(FIELDS)))
                for index, value in enumerate(counters):
                    totals[index] += value - before[index]
        totals[0] /= 1e6
        totals[1] /= 1e6
        return totals


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


def wait_for(clients: list[subprocess.Popen]) -> tuple[float, list[bytes]]:
    """Wait for the storescu clients: (their CPU seconds, from their exit, the standard
    errors of those that failed)."""
    seconds, failures = 0.0, []
    for client in clients:
        _, status, usage = os.wait4(client.pid, 0)
        client.returncode = os.waitstatus_to_exitcode(status)
        seconds += usage.ru_utime + usage.ru_stime
        if client.returncode != 0 and client.stderr is not None:
            failures.append(client.stderr.read())
    return seconds, failures


@dataclass
class Config:
    processes: int
    parallel: int
    warm: str

    @property
    def name(self) -> str:
        plural = "es" if self.processes > 1 else ""
        return f"{self.processes} process{plural}, {self.parallel} assoc, warm-up {self.warm}"


def warm_associations(config: Config, instances: int) -> int:
    """As run.py: as many associations as the push, at least one per receiver process."""
    if config.warm == "one":
        return 1
    return min(max(config.processes, config.parallel), instances)


def reading() -> tuple[float, list[float], int]:
    """The clock (s), /proc/stat's first line and its count of tasks created, together."""
    times, forks = accounting.read_stat()
    return time.perf_counter(), times, forks


# Each push's `rest` (accounting.py) by process name, ms per instance: printed, not medians.
rest_names: list[dict[str, float]] = []


def push_once(dataset: Any, warmup: Any, workdir: Path, config: Config) -> dict[str, float]:
    rundir = Path(tempfile.mkdtemp(dir=workdir / "runs"))
    port = bench.free_port()
    process = bench.start_yunying_pg(workdir, config.processes)(rundir, port)
    try:
        bench.wait_for_port(port, process)
        bench.push(port, warmup.files, warm_associations(config, len(warmup.files)))
        bench.wait_handed_over("yunying-postgresql", rundir)
        bench.settle(process.pid)
        tree = bench.tree_pids(process.pid)
        database = urlsplit((rundir / "database_url").read_text()).path.strip("/")
        database_pids = backends(database)
        groups = [group for group in (dataset.files[i :: config.parallel] for i in range(config.parallel)) if group]
        machine_before = machine_times()
        with (
            SpeedProbe() as probe,
            Sampler(sorted(set(tree) | database_pids), port, database) as sampler,
            WireTap(port) as tap,
        ):
            # Every thread of the machine before and after the push (accounting.py), each
            # snapshot between two readings of the clock and of /proc/stat.
            first = reading()
            snapshot_before = accounting.snapshot()
            second = reading()
            clients_started = time.time()
            started = time.perf_counter()
            clients = [bench.storescu(port, group) for group in groups]
            sampler.add([client.pid for client in clients])
            clients_cpu, failures = wait_for(clients)
            seconds = time.perf_counter() - started
            third = reading()
            snapshot_after = accounting.snapshot()
            fourth = reading()
        machine_after = machine_times()
        if failures:
            raise RuntimeError(f"storescu failed: {failures[0][-300:]!r}")
        client_pids = {client.pid for client in clients}
        count = len(dataset.files)
        delta = [after - before for after, before in zip(machine_after, machine_before, strict=True)]
        row: dict[str, float] = {
            "inst/s": count / seconds,
            "load": os.getloadavg()[0],
            "idle %": 100 * (delta[3] + delta[4]) / max(1, sum(delta)),
            "steal %": 100 * delta[7] / max(1, sum(delta)),
            # The cores' speed during the push (bench/ingest/speed_probe.py): lower is faster.
            "probe us": probe.median_us,
            "probe slow %": 100 * probe.slow_share(FASTEST_PROBE_US),
        }

        def put(name: str, values: list[float]) -> None:
            for field, value in zip(FIELDS, values, strict=True):
                row[f"{name} {field}"] = value / count

        put("tree", sampler.of(set(tree)))
        for pid in tree:
            name = role(pid)
            put(name, sampler.of({pid}))
            if name.startswith("worker"):
                row[f"{name} assocs"] = len(sampler.served.get(pid, ()))
        put("postgres", sampler.of(sampler.backends))
        put("storescu", sampler.of(client_pids))
        # storescu's own count (its CPU from its exit status, exact): beside the sampled one.
        row["storescu cpu (rusage)"] = clients_cpu * 1000 / count
        # The rate at the server's side of the wire (wire.py): from the first association's
        # A-ASSOCIATE-RQ reaching the receiver to its last C-STORE answer, without the
        # clients' start-ups before it; the first client's start-up before its request and
        # the spread of the associations' requests, ms.
        wire = tap.wire
        row["wire inst/s"] = wire.rate(count)
        row["wire start ms"] = (min(wire.requests.values()) - clients_started) * 1000 if wire.requests else float("nan")
        row["wire spread ms"] = wire.spread * 1000
        # Answers per second while every association was open (no client start-up in it).
        row["wire steady inst/s"] = wire.steady_rate()
        # C-STORE answers seen (one per instance: fewer, and the tap missed some).
        row["wire answers"] = wire.answers
        # The cores' time over the push and where it went, ms per instance: the window runs
        # from the middle of the first snapshot to the middle of the second.
        others, rest = accounting.groups(snapshot_before, snapshot_after, sampler.pids)
        window_ms = (third[0] + fourth[0] - first[0] - second[0]) / 2 * 1000
        idle_ms, steal_ms = accounting.idle_steal_ms(
            [(a + b) / 2 for a, b in zip(first[1], second[1], strict=True)],
            [(a + b) / 2 for a, b in zip(third[1], fourth[1], strict=True)],
        )
        named = {
            "receiver": sampler.of(set(tree))[0],
            "postgres": sampler.of(sampler.backends)[0],
            "storescu": clients_cpu * 1000,
        }
        spent = accounting.budget(os.cpu_count() or 1, window_ms, named, others, idle_ms, steal_ms)
        for name, ms in spent.items():
            row[f"budget {name}"] = ms / count
        row["budget window ms"] = window_ms
        # Processes and threads started on the machine during the window (the receiver's
        # association threads among them): those that also ended are in `unseen`.
        row["forks"] = (third[2] + fourth[2] - first[2] - second[2]) / 2
        rest_names.append({name: ms / count for name, ms in rest.items()})
        return row
    finally:
        bench.stop(process)
        subprocess.run(["rm", "-rf", str(rundir)], check=False)


SHOWN = ("cpu", "wait", "vol", "invol", "migr", "assocs")


def line(row: dict[str, float]) -> str:
    """The row, grouped by what it measures: `tree cpu 5.1 wait 2.0 ...; worker 0 ...`."""
    parts: dict[str, list[str]] = {}
    for key, value in row.items():
        name, _, field = key.rpartition(" ")
        if key.startswith("budget "):
            # accounting.py's groups, ms per instance: `budget cores 8.14 receiver 3.90 ...`
            parts.setdefault("budget", []).append(f"{key[7:]} {value:.2f}")
        elif field in SHOWN and name:
            parts.setdefault(name, []).append(f"{field} {value:.2f}")
        else:
            parts.setdefault("", []).append(f"{key} {value:.1f}")
    return "; ".join(f"{name} {' '.join(values)}".strip() for name, values in parts.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--processes", default="1,2", help="DICOM_RECEIVER_PROCESSES values, alternated")
    parser.add_argument("--parallel", default="1", help="associations at once, alternated (e.g. 1,4)")
    parser.add_argument("--set", choices=["a", "b"], default="a")
    parser.add_argument(
        "--warm",
        default="as-push",
        help="the warm-up, alternated if several: as-push (as many associations at once as the push, at least"
        " one per receiver process: the default, as run.py) or one (one association, as run.py before run 26)",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "yunying-run-queue")
    bench.add_storescu_option(parser)
    args = parser.parse_args()
    bench.STORESCU_OPTIONS.extend(args.storescu_option)
    (args.workdir / "runs").mkdir(parents=True, exist_ok=True)
    generated = bench.generate(args.workdir)
    dataset = next(s for s in generated if s.name == args.set)
    warmup = next(s for s in generated if s.name == "warmup")
    configs = [
        Config(int(p), int(n), warm)
        for n in args.parallel.split(",")
        for p in args.processes.split(",")
        for warm in args.warm.split(",")
    ]
    rows: dict[str, list[dict[str, float]]] = {config.name: [] for config in configs}
    print(f"load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
    for _ in range(args.rounds):
        for config in configs:
            row = push_once(dataset, warmup, args.workdir, config)
            rows[config.name].append(row)
            print(f"{config.name}: {line(row)}", flush=True)
            busiest = sorted(rest_names[-1].items(), key=lambda item: -item[1])[:4]
            print(f"  rest by process name, ms/inst: {', '.join(f'{n} {ms:.2f}' for n, ms in busiest)}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("medians (ms and counts per instance; inst/s, load, idle and steal % as they are):")
    for name, measured in rows.items():
        keys = [k for k in measured[0] if all(k in m for m in measured)]
        print(f"{name}: {line({k: statistics.median(m[k] for m in measured) for k in keys})}")


if __name__ == "__main__":
    main()
