#!/usr/bin/env python
"""Where the receiver's CPU goes on one association (or several): set (a) sent by dcmtk storescu to a
receiver running in this process, every thread of it under cProfile (or set (b): `--set b`).

run.py says how much CPU an instance costs beside a bare pynetdicom SCP; this says where
it goes. The receiver is the one `manage.py dicomnode` starts (`start_server`, received
datasets in the store's `.receiving/`), on a database of its own (SQLite in the work
directory, or a PostgreSQL database made for the run). Each push is one association
sending the set as a study of its own (set (a): 200 x 40 KB CT instances). It prints

- the receiver's CPU per instance without the profiler (this process's CPU time over the
  unprofiled pushes; storescu is another process),
- the SQL statements per instance by kind, and the transactions per instance,
- the functions by own time and by cumulative time over the profiled pushes, all threads
  merged (cProfile inflates small calls: read it for where, not for how much).

    .venv/bin/python bench/ingest/profile_path.py [--index postgresql] [--pushes 3] [--profiled 2]

With `--callgrind`, run under valgrind's callgrind with instrumentation off at the start,
it also counts the receiver's instructions over the unprofiled pushes (instrumentation
turned on and the counters zeroed after the warm-up push, dumped after the last: every
thread of this process; storescu and PostgreSQL are other processes), a count that holds
on a loaded machine where CPU time does not:

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \
        .venv/bin/python bench/ingest/profile_path.py --callgrind /tmp/cg.%p \
        --pushes 2 --profiled 0

(the virtualenv's interpreter, a link to the binary: valgrind does not follow a launcher script's exec).
With `--bare` the same pushes go to the bare pynetdicom SCP of run.py instead (bare_scp.py, with
an fsync per file unless `--no-fsync`), in this process, counted the same way: the reference's
instructions per instance, beside which the receiver's own share is read.

With `--parallel N` each push is split over N storescu associations at once, as run.py
splits a set (`--one-after-another`: the same N associations in turn), and it prints per
instance the receiver's context switches (voluntary, involuntary: getrusage, every thread),
storescu's CPU and that of the database's PostgreSQL backends. Counted under callgrind,
1, N one after another and N at once tell the associations' own set-up apart from their
sharing one process (docs/benchmarks-ingest.md, run 31). `--switch-interval` sets the
interpreter's (sys.setswitchinterval) for the receiver; `--strace OUT` counts its system
calls per instance, in all and by kind of thread (the association's, its DUL's, the
publishing pools'), its children's (storescu, psql) left out; the futex calls are the
interpreter lock's and the threads' hand-offs.

Every run also prints the receiver's user and system time per instance, in all and by kind
of thread, and what the kernel's own threads (block I/O completion, writeback, the
journal) and the machine's softirqs spent per instance meanwhile: on a busy machine those
are every process's, so read them on a quiet one or side by side.

With `--answer-times` it also prints the wall-clock from each C-STORE's last PDU to its
answer and the handler's parts (tags read, file published, series lookup, the committing
statement, the wait for a file published ahead): with one association the sender waits
for each answer, so that time, not CPU, bounds the rate.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import (
    AE_TITLE,
    BASE_DIR,
    CALLING,
    PG_SOCKET_DIR,
    pg_url,
    psql,
    seed_database,
    write_ct_series,
)

MAX_PDU = 131072
# run.py's sets (a) and (b): instances per push, rows and columns.
SETS = {"a": (200, 140, 140), "b": (100, 512, 512)}


def generate(directory: Path, which: str, push: int) -> list[Path]:
    """The set as a study of its own for each push."""
    count, rows, columns = SETS[which]
    folder = directory / f"{which}{push:02d}"
    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_ct_series(folder, count, rows, columns, patient_id=f"PROF{push:02d}", accession=f"P{push}")
        marker.touch()
    return sorted(folder.glob("*.dcm"))


# storescu's own options: under callgrind the receiver is some fifty times slower, and
# storescu's 30 s wait for the association's answer is not enough.
STORESCU_OPTIONS: list[str] = []


# The split's associations one after another instead of at once (`--one-after-another`):
# what the associations' own set-up costs, apart from their sharing the process.
SEQUENTIAL: list[bool] = [False]


def push(port: int, files: list[Path], parallel: int = 1) -> float:
    """The files over `parallel` storescu associations at once, split as run.py splits them
    (one series over every association)."""
    groups = [group for group in (files[i::parallel] for i in range(parallel)) if group]
    started = time.perf_counter()
    clients: list[subprocess.Popen[bytes]] = []
    for group in groups:
        clients.append(
            subprocess.Popen(
                ["storescu", "-aet", CALLING, "-aec", AE_TITLE, "--max-pdu", str(MAX_PDU), *STORESCU_OPTIONS]
                + ["127.0.0.1", str(port)]
                + [str(path) for path in group],
                env={**os.environ, "TCP_NODELAY": "1"},
                stdout=subprocess.DEVNULL,
            )
        )
        if SEQUENTIAL[0]:
            clients[-1].wait()
    failed = [client.args for client in clients if client.wait() != 0]
    if failed:
        sys.exit(f"storescu failed: {len(failed)} of {len(clients)} associations")
    return time.perf_counter() - started


TICK = os.sysconf("SC_CLK_TCK")


def proc_times(stat: str) -> tuple[float, float]:
    """(user, system) seconds from a /proc/<pid>/stat line (after the command's bracket)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def task_counters(task: Path) -> tuple[float, float, float]:
    """(user seconds, system seconds, voluntary context switches) of one thread."""
    user, system = proc_times((task / "stat").read_text())
    switches = 0.0
    for line in (task / "status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            switches = float(line.split()[1])
    return user, system, switches


def kernel_threads() -> dict[int, tuple[str, float]]:
    """Every kernel thread's (kind, CPU seconds so far): the children of kthreadd (pid 2),
    by name without the worker's numbers ("kworker/u8:2-flush-254:0" -> "kworker flush",
    "jbd2/vda-8" -> "jbd2")."""
    threads: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if stat.rsplit(")", 1)[1].split()[1] != "2":
                continue
            user, system = proc_times(stat)
            kind = name.split("/", 1)[0]
            if kind == "kworker" and "-" in name:
                kind += " " + name.split("-", 1)[1].split("-", 1)[0].split(":", 1)[0]
            threads[int(entry.name)] = (kind, user + system)
    return threads


def machine_times() -> dict[str, float]:
    """The whole machine's CPU seconds by kind (/proc/stat's first line)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {name: int(value) / TICK for name, value in zip(names, fields, strict=True)}


class Counts:
    """What a push costs beside the receiver's CPU, read before and after it: this process's
    user and system time and context switches (getrusage counts every thread, ended ones
    included), its threads' user and system time by kind (ThreadTimes), storescu's CPU
    (the waited-for children's), the CPU of the database's PostgreSQL backends (their
    schedstat; the receiver's connections are kept from push to push), the kernel's own
    threads' (writeback, the journal, softirqs: what the disk and network work of every
    process costs them) and the whole machine's softirq and iowait time."""

    FIELDS = (
        "cpu",
        "user",
        "system",
        "voluntary",
        "involuntary",
        "faults",
        "storescu",
        "postgresql",
        "softirq",
        "iowait",
    )

    def __init__(self, database: str | None, threads: ThreadTimes | None = None) -> None:
        self.database = database
        self.threads = threads
        self.totals = dict.fromkeys(self.FIELDS, 0.0)
        self.kernel: dict[str, float] = {}
        self.by_thread: dict[str, list[float]] = {}
        self._at: dict[str, float] = {}
        self._kernel_at: dict[int, tuple[str, float]] = {}
        self._threads_at: dict[int, tuple[str, float, float, float]] = {}

    def _backends_cpu(self) -> float:
        if self.database is None:
            return 0.0
        pids = psql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            self.database,
        ).split()
        seconds = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                seconds += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
        return seconds

    def _now(self, ending: bool) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu = time.process_time()
        machine = machine_times()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        postgresql = self._backends_cpu()
        # psql is a child too: storescu's CPU is read before it at the end, after it at the start.
        children = before if ending else resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "cpu": cpu,
            "user": own.ru_utime,
            "system": own.ru_stime,
            "voluntary": own.ru_nvcsw,
            "involuntary": own.ru_nivcsw,
            "faults": own.ru_minflt,
            "storescu": children.ru_utime + children.ru_stime,
            "postgresql": postgresql,
            "softirq": machine["softirq"],
            "iowait": machine["iowait"],
        }

    def start(self) -> None:
        self._at = self._now(ending=False)
        self._kernel_at = kernel_threads()
        if self.threads is not None:
            self._threads_at = self.threads.snapshot()

    def stop(self) -> None:
        now = self._now(ending=True)
        kernel = kernel_threads()
        for field in self.FIELDS:
            self.totals[field] += now[field] - self._at[field]
        for pid, (kind, seconds) in kernel.items():
            self.kernel[kind] = self.kernel.get(kind, 0.0) + seconds - self._kernel_at.get(pid, (kind, 0.0))[1]
        if self.threads is not None:
            for tid, (kind, user, system, switches) in self.threads.snapshot().items():
                _, user_before, system_before, switches_before = self._threads_at.get(tid, (kind, 0.0, 0.0, 0.0))
                times = self.by_thread.setdefault(kind, [0.0, 0.0, 0.0])
                times[0] += user - user_before
                times[1] += system - system_before
                times[2] += switches - switches_before


def callgrind_control(*options: str) -> str:
    """Tell the callgrind this process runs under (callgrind_control talks to it by its pid)."""
    done = subprocess.run(["callgrind_control", *options, str(os.getpid())], check=True, capture_output=True, text=True)
    return done.stdout


def callgrind_instructions(out_file: str) -> int:
    """Dump callgrind's counters (zeroed before the timed pushes) and return that dump's
    instructions executed, every thread of this process together (callgrind's default)."""
    callgrind_control("--dump=timed")
    callgrind_control("--instr=off")
    pattern = Path(out_file.replace("%p", str(os.getpid())))
    for dump in sorted(pattern.parent.glob(pattern.name + ".*"), key=lambda path: path.stat().st_mtime, reverse=True):
        head = dump.read_text(errors="replace")[:2000]
        if "desc: Trigger: dump timed" in head:
            return int(head.split("summary:", 1)[1].split()[0])
    sys.exit(f"no callgrind dump named {pattern}.N: give --callgrind-out-file as valgrind has it")


class ThreadProfiles:
    """A cProfile.Profile for every thread started while on (the association's, its DUL's)."""

    def __init__(self) -> None:
        self.on = False
        self.profiles: list[cProfile.Profile] = []
        self._start = threading.Thread.start

    def install(self) -> None:
        owner = self
        start = self._start

        def profiled_start(thread: threading.Thread) -> None:
            if owner.on:
                inner = thread.run

                def run() -> None:
                    profile = cProfile.Profile()
                    owner.profiles.append(profile)
                    profile.enable()
                    try:
                        inner()
                    finally:
                        profile.disable()

                thread.run = run  # type: ignore[method-assign]
            start(thread)

        threading.Thread.start = profiled_start  # type: ignore[method-assign]

    def stats(self) -> pstats.Stats | None:
        if not self.profiles:
            return None
        stats = pstats.Stats(self.profiles[0], stream=io.StringIO())
        for profile in self.profiles[1:]:
            stats.add(profile)
        return stats


class SyncCounter:
    """The receiver's fsyncs, of files and of directories, counted as they are made
    (os.fsync wrapped; one fstat more per fsync): what strace counts too, without slowing
    every other call."""

    def __init__(self) -> None:
        self.files = 0
        self.directories = 0

    def install(self) -> None:
        import stat

        counter = self
        fsync = os.fsync

        def counted(fd: Any) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            if stat.S_ISDIR(os.fstat(number).st_mode):
                counter.directories += 1
            else:
                counter.files += 1
            fsync(fd)

        os.fsync = counted


class QueryCounter:
    """SQL statements by their first words, and commits, from every thread."""

    def __init__(self) -> None:
        self.statements: Counter[str] = Counter()
        self.commits = 0

    def install(self) -> None:
        from django.db.backends.base.base import BaseDatabaseWrapper
        from django.db.backends.utils import CursorWrapper

        counter = self
        execute, commit = CursorWrapper.execute, BaseDatabaseWrapper.commit

        def counted_execute(cursor: Any, sql: str, params: Any = None) -> Any:
            words = " ".join(str(sql).split()[:3])
            counter.statements[words[:60]] += 1
            return execute(cursor, sql, params)

        def counted_commit(wrapper: Any) -> Any:
            counter.commits += 1
            return commit(wrapper)

        CursorWrapper.execute = counted_execute  # type: ignore[method-assign]
        BaseDatabaseWrapper.commit = counted_commit  # type: ignore[method-assign]

    def reset(self) -> None:
        self.statements.clear()
        self.commits = 0


class AnswerTimes:
    """Wall-clock of each C-STORE on the receiver's side, unprofiled pushes only: from its
    last PDU (EVT_DIMSE_RECV) to its answer handed to the DUL, and the parts of the
    handler in between (each a function's own duration, in whichever thread it ran). With
    one association the sender waits for each answer, so this is what limits it."""

    PARTS = [
        ("cloudpacs.services", "_read_indexed_tags", "tags read"),
        ("cloudpacs.services", "_study_uid_ahead", "study UID read ahead"),
        ("cloudpacs.storage", "stage", "staged"),
        ("cloudpacs.storage", "publish", "published (link, fsyncs)"),
        ("cloudpacs.services", "_series_identity", "series looked up (first of a series)"),
        ("cloudpacs.services", "_insert_autocommit", "one statement (series looked up, row committed)"),
        ("cloudpacs.storage", "discard", "staged name removed"),
    ]

    def __init__(self) -> None:
        self.on = False
        self.lock = threading.Lock()
        self.received: dict[int, float] = {}
        self.answers: list[float] = []
        self.handler: list[float] = []
        self.waits: list[float] = []
        self.link_waits: list[float] = []
        self.parts: dict[str, list[float]] = {label: [] for _, _, label in self.PARTS}

    def install(self) -> None:
        import importlib

        from dicomnode import fastpath, server

        owner = self
        for module_name, name, label in self.PARTS:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                setattr(module, name, self._timed(getattr(module, name), self.parts[label]))
        publishing = getattr(importlib.import_module("cloudpacs.storage"), "Publishing", None)
        if publishing is not None:
            publishing.result = self._timed(publishing.result, self.waits)
            if hasattr(publishing, "linked"):
                publishing.linked = self._timed(publishing.linked, self.link_waits)
        dimse_recv = server.handle_dimse

        def handle_dimse(event: Any) -> None:
            message = getattr(event, "message", None)
            values = getattr(message, "_values", None)
            if owner.on and values is not None:
                owner.received[values[0x0110]] = time.perf_counter()
            dimse_recv(event)

        server.HANDLERS[:] = [
            (kind, handle_dimse if handler is dimse_recv else handler) for kind, handler in server.HANDLERS
        ]
        store = server.handle_store

        def handle_store(event: Any) -> Any:
            started = time.perf_counter()
            try:
                return store(event)
            finally:
                if owner.on:
                    owner.handler.append(time.perf_counter() - started)

        server.HANDLERS[:] = [
            (kind, handle_store if handler is store else handler) for kind, handler in server.HANDLERS
        ]
        send_msg = fastpath.PlainStoreDIMSE.send_msg

        def answered(dimse: Any, primitive: Any, context_id: int) -> None:
            send_msg(dimse, primitive, context_id)
            received = owner.received.pop(getattr(primitive, "MessageIDBeingRespondedTo", None), None)
            if owner.on and received is not None:
                owner.answers.append(time.perf_counter() - received)

        fastpath.PlainStoreDIMSE.send_msg = answered  # type: ignore[method-assign]

    def _timed(self, function: Any, into: list[float]) -> Any:
        owner = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if owner.on:
                    with owner.lock:
                        into.append(time.perf_counter() - started)

        return timed

    def report(self, instances: int) -> None:
        def line(label: str, values: list[float]) -> None:
            if values:
                ordered = sorted(values)
                median = ordered[len(ordered) // 2] * 1000
                p90 = ordered[int(len(ordered) * 0.9)] * 1000
                print(f"  {label:<34} {len(values) / instances:5.2f}/inst  median {median:6.2f} ms  p90 {p90:6.2f} ms")

        print("wall-clock per C-STORE (unprofiled pushes):")
        line("last PDU to the answer", self.answers)
        line("handle_store", self.handler)
        for label, values in self.parts.items():
            line(label, values)
        line("waited for the file's name (row after)", self.link_waits)
        line("waited for the file published ahead", self.waits)


class ThreadTimes:
    """Each thread's kernel id and name (pynetdicom's association and DUL threads, the
    publishing pools'), recorded when it starts, and its user and system time and its
    voluntary context switches (/proc/self/task/<tid>/), read when asked and, for a thread
    that ends, as it ends: strace names threads by kernel id only, and getrusage adds them
    all up."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {threading.get_native_id(): "main"}
        self.ended: dict[int, tuple[str, float, float, float]] = {}

    def install(self) -> None:
        owner = self
        bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

        def named(thread: threading.Thread) -> None:
            tid = threading.get_native_id()
            owner.names[tid] = thread.name
            try:
                bootstrap(thread)
            finally:
                with contextlib.suppress(OSError):
                    task = Path(f"/proc/self/task/{tid}")
                    owner.ended[tid] = (thread_kind(thread.name), *task_counters(task))

        threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]

    def snapshot(self) -> dict[int, tuple[str, float, float, float]]:
        """(kind, user seconds, system seconds, voluntary switches) of every thread of this
        process so far, ended ones too."""
        times = dict(self.ended)
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            with contextlib.suppress(OSError):
                times[tid] = (thread_kind(self.names.get(tid, "unnamed")), *task_counters(task))
        return times


# pynetdicom's names: an association's own thread (the handlers run on it) and its DUL
# provider's (the socket), which keeps threading's default name.
THREAD_KINDS = {"AcceptorThread": "association", "Thread": "DUL"}


def thread_kind(name: str) -> str:
    """A thread's name without its number or time: "publish_3" -> "publish",
    "AcceptorThread@2026..." -> "association", "Thread-12" -> "DUL"."""
    head = name.split("@", 1)[0].split(" ", 1)[0].rstrip("0123456789").rstrip("_-")
    return THREAD_KINDS.get(head, head or name)


def print_syscalls(trace: Path, instances: int, names: dict[int, str]) -> None:
    """strace -f's trace of this process as calls per instance: every call made by the
    receiver's threads, none of its children's (storescu, psql: a process that called
    execve is left out) nor the bench's main thread's, the most frequent first, then per
    kind of thread (the main thread's too)."""
    calls: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    by_thread: dict[str, Counter[str]] = {}
    children: set[int] = set()
    forked: dict[int, int] = {}
    lines = trace.read_text(errors="replace").splitlines()
    for line in lines:
        pid_text, _, rest = line.partition(" ")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        rest = rest.lstrip()
        name = rest.split("(", 1)[0]
        if name.startswith("execve") and not rest.endswith("= -1"):
            children.add(pid)
        if name in {"clone", "clone3", "vfork", "fork"}:
            child = rest.rsplit("= ", 1)[-1].split()[0]
            if child.isdigit():
                forked[int(child)] = pid
    # A child that never exec'd (a fork before exec, or a pool thread) is a thread only
    # when the kernel says so: threads were recorded by name when they started.
    for pid in list(forked):
        if pid not in names:
            children.add(pid)
    for line in lines:
        pid_text, _, rest = line.partition(" ")
        if not pid_text.isdigit() or int(pid_text) in children:
            continue
        rest = rest.lstrip()
        if rest.startswith("<... "):
            # The end of a call that another thread's line interrupted: its result.
            resumed = rest[5:].split(" ", 1)[0]
            if " = -1 " in rest:
                failed[resumed] += 1
            continue
        if rest.startswith(("+++", "---")):
            continue
        name = rest.split("(", 1)[0]
        if not name or not name.replace("_", "").isalnum():
            continue
        kind = thread_kind(names.get(int(pid_text), "unnamed"))
        by_thread.setdefault(kind, Counter())[name] += 1
        if kind == "main":
            # The bench's own thread: it starts storescu and reads the counters.
            continue
        calls[name] += 1
        if " = -1 " in rest:
            failed[name] += 1
    print("system calls per instance (strace -f, the receiver's threads only; failed ones in brackets):")
    for name, number in calls.most_common(24):
        errors = f" ({failed[name] / instances:.1f})" if failed[name] else ""
        print(f"  {number / instances:7.1f}  {name}{errors}")
    print(f"  {sum(calls.values()) / instances:7.1f}  in all")
    print("by thread (calls per instance):")
    for kind, counted in sorted(by_thread.items(), key=lambda item: -sum(item[1].values())):
        top = ", ".join(f"{name} {number / instances:.1f}" for name, number in counted.most_common(8))
        print(f"  {kind:<24} {sum(counted.values()) / instances:7.1f}: {top}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--set", choices=sorted(SETS), default="a", help="run.py's set (a) or (b)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "yunying-profile-path")
    parser.add_argument(
        "--pushes", type=int, default=3, help="unprofiled associations, one set each, the first untimed"
    )
    parser.add_argument("--profiled", type=int, default=2, help="profiled associations, one set each")
    parser.add_argument(
        "--answer-times",
        action="store_true",
        help="time each C-STORE from its last PDU to its answer, and the handler's parts (wall-clock; the"
        " timers' own cost is then in the CPU figure)",
    )
    parser.add_argument(
        "--callgrind",
        metavar="OUT_FILE",
        default=None,
        help="count the receiver's instructions over the unprofiled pushes, run under valgrind --tool=callgrind"
        " --instr-atstart=no --callgrind-out-file=OUT_FILE (the same pattern here)",
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="push to the bare pynetdicom SCP (bare_scp.py) in this process instead: no database, no profile",
    )
    parser.add_argument("--no-fsync", action="store_true", help="with --bare: no fsync per file")
    parser.add_argument(
        "--bare-loops",
        choices=["stock", "event"],
        default="stock",
        help="with --bare: pynetdicom's polling loops (run.py's reference), or the receiver's event-driven ones"
        " (dicomnode.reactor): under callgrind the polling loops spin for as long as the slowed process runs",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="storescu associations at once per push, the set split over them as run.py does (default 1)",
    )
    parser.add_argument(
        "--one-after-another",
        action="store_true",
        help="send --parallel's associations one after another, not at once: their set-up's cost without the sharing",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="the interpreter's switch interval in seconds for the receiver (sys.setswitchinterval; default"
        " Python's 0.005)",
    )
    parser.add_argument(
        "--strace",
        metavar="OUT_FILE",
        default=None,
        help="count the receiver's system calls over the unprofiled pushes (strace -f attached to every thread"
        " of this process; written to OUT_FILE, printed per instance): the futex calls are the interpreter lock's"
        " and the threads' hand-offs. strace slows every call: read the counts, not the CPU",
    )
    parser.add_argument(
        "--storescu-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an option for every storescu client, e.g. --storescu-option=-R: propose only the files' presentation"
        " contexts, as a modality does, not 128 (repeatable)",
    )
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--dump", type=Path, default=None, help="also write the merged profile here (pstats)")
    parser.add_argument(
        "--template",
        default=None,
        help="a seeded database to copy instead of migrating each time (a PostgreSQL database name, or an"
        " SQLite file), made first when it does not exist: to compare checkouts with the same migrations",
    )
    args = parser.parse_args()
    SEQUENTIAL[0] = args.one_after_another
    if args.callgrind is not None:
        STORESCU_OPTIONS[:] = ["--acse-timeout", "3600", "--dimse-timeout", "3600"]
    STORESCU_OPTIONS.extend(args.storescu_option)

    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    if args.bare:
        try:
            count_bare(args, [generate(workdir / "sets", args.set, number) for number in range(args.pushes)], run)
        finally:
            shutil.rmtree(run, ignore_errors=True)
        return
    env = {
        "STORAGE_ROOT": str(run / "storage"),
        "DICOM_AE_TITLE": AE_TITLE,
        "DICOM_MAX_PDU": str(MAX_PDU),
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "CELERY_BROKER_URL": "",
    }
    database = f"yunying_profile_path_{os.getpid()}"
    seeded = False
    if args.index == "postgresql":
        if not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
            sys.exit("no PostgreSQL at " + PG_SOCKET_DIR)
        if args.template:
            if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{args.template}'"):  # noqa: S608 (our argument)
                psql(f"CREATE DATABASE {args.template}")
                seed_database(BASE_DIR, {**os.environ, **env, "DATABASE_URL": pg_url(args.template)})
            psql(f"CREATE DATABASE {database} TEMPLATE {args.template}")
            seeded = True
        else:
            psql(f"CREATE DATABASE {database}")
        env["DATABASE_URL"] = pg_url(database)
    else:
        env["DATABASE_URL"] = f"sqlite:///{run / 'db.sqlite3'}"
        if args.template:
            template = Path(args.template)
            if not template.exists():
                seed_database(BASE_DIR, {**os.environ, **env, "DATABASE_URL": f"sqlite:///{template}"})
                with sqlite3.connect(template) as db:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copyfile(template, run / "db.sqlite3")
            seeded = True
    os.environ.update(env)
    sets = [generate(workdir / "sets", args.set, number) for number in range(args.pushes + args.profiled)]
    try:
        if not seeded:
            seed_database(BASE_DIR, {**os.environ})
        profile(args, sets, database if args.index == "postgresql" else None)
    finally:
        if args.index == "postgresql":
            psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(run, ignore_errors=True)


def count_bare(args: argparse.Namespace, sets: list[list[Path]], run: Path) -> None:
    """The bare pynetdicom SCP's CPU (and, under callgrind, instructions) per instance,
    over the same pushes as the receiver's: the first untimed, the rest counted."""
    from bare_scp import make_server

    fsync = not args.no_fsync
    handler = None
    if args.bare_loops == "event":
        sys.path.insert(0, str(BASE_DIR))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
        from pynetdicom.transport import RequestHandler

        from dicomnode import reactor

        class EventDrivenHandler(RequestHandler):
            def _create_association(self) -> Any:
                assoc = super()._create_association()
                reactor.install(assoc)
                return assoc

        handler = EventDrivenHandler
    server = make_server(
        "127.0.0.1", 0, run / "bare", fsync=fsync, aet=AE_TITLE, max_pdu=MAX_PDU, request_handler=handler
    )
    port = server.server_address[1]
    try:
        push(port, sets[0])
        if args.callgrind is not None:
            callgrind_control("--instr=on")
            callgrind_control("--zero")
        cpu = wall = 0.0
        count = 0
        for files in sets[1:]:
            before = time.process_time()
            wall += push(port, files)
            cpu += time.process_time() - before
            count += len(files)
        instructions = callgrind_instructions(args.callgrind) if args.callgrind is not None else None
    finally:
        server.shutdown()
    if count:
        name = f"bare pynetdicom SCP{' + fsync' if fsync else ''} ({args.bare_loops} loops)"
        print(
            f"{name}: {count} instances, CPU {cpu * 1000 / count:.2f} ms/instance, {count / wall:.0f} instances/s,"
            f" load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        if instructions is not None:
            print(f"bare SCP instructions (callgrind Ir): {instructions / count:,.0f} per instance")


def profile(args: argparse.Namespace, sets: list[list[Path]], database: str | None) -> None:
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
    import django

    django.setup()
    from django.db import connection

    from dicomnode.processes import receiving_dir
    from dicomnode.server import settle_heap, start_server

    receiving = receiving_dir()
    receiving.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(receiving)
    connection.close()
    queries = QueryCounter()
    queries.install()
    syncs = SyncCounter()
    if args.strace is None:
        syncs.install()
    threads = ThreadProfiles()
    threads.install()
    names = ThreadTimes()
    names.install()
    answers = AnswerTimes()
    if args.answer_times:
        answers.install()
    server = start_server("127.0.0.1", 0, block=False)
    settle_heap()
    port = server.server_address[1]
    try:
        # One push untimed: code loaded, the index's connection open, as in run.py.
        warmup, plain, profiled = sets[0], sets[1 : args.pushes], sets[args.pushes :]
        push(port, warmup, args.parallel)
        counts = Counts(database, names)
        wall = 0.0
        count = 0
        answers.on = args.answer_times
        if args.callgrind is not None:
            callgrind_control("--instr=on")
            callgrind_control("--zero")
        tracer = None
        if args.strace is not None:
            tracer = subprocess.Popen(["strace", "-f", "-qq", "-y", "-o", args.strace, "-p", str(os.getpid())])
            time.sleep(2)  # attached to every thread before the first push
        synced = (syncs.files, syncs.directories)
        for files in plain:
            queries.reset()
            counts.start()
            wall += push(port, files, args.parallel)
            counts.stop()
            count += len(files)
        answers.on = False
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait()
        instructions = callgrind_instructions(args.callgrind) if args.callgrind is not None else None
        load = os.getloadavg()[0]
        if count:
            per = {field: value / count for field, value in counts.totals.items()}
            how = " one after another" if args.one_after_another else ""
            print(
                f"{args.index}, {args.parallel} association(s){how},"
                f" switch interval {sys.getswitchinterval() * 1000:g} ms:"
                f" {count} instances unprofiled, receiver CPU {per['cpu'] * 1000:.2f} ms/instance,"
                f" {count / wall:.0f} instances/s, load {load:.1f} on {os.cpu_count()} CPUs"
            )
            print(
                f"per instance: receiver's context switches {per['voluntary']:.1f} voluntary,"
                f" {per['involuntary']:.1f} involuntary; storescu CPU {per['storescu'] * 1000:.2f} ms;"
                f" PostgreSQL backends' CPU {per['postgresql'] * 1000:.2f} ms"
            )
            print(
                f"receiver user {per['user'] * 1000:.2f} ms, system {per['system'] * 1000:.2f} ms,"
                f" {per['faults']:.1f} page faults per instance;"
                " by thread (user/system ms, voluntary switches): "
                + ", ".join(
                    f"{kind} {user * 1000 / count:.2f}/{system * 1000 / count:.2f}/{switches / count:.1f}"
                    for kind, (user, system, switches) in sorted(
                        counts.by_thread.items(), key=lambda item: -item[1][0] - item[1][1]
                    )
                    if user + system or switches
                )
            )
            print(
                "kernel threads' CPU per instance (ms): "
                + ", ".join(
                    f"{kind} {seconds * 1000 / count:.3f}"
                    for kind, seconds in sorted(counts.kernel.items(), key=lambda item: -item[1])
                    if seconds
                )
                + f"; the machine's softirq {per['softirq'] * 1000:.3f}, iowait {per['iowait'] * 1000:.3f}"
            )
            if instructions is not None:
                print(f"receiver instructions (callgrind Ir): {instructions / count:,.0f} per instance")
            last = len(plain[-1])
            print(
                "fsyncs per instance (not counted under --strace, which lists them):"
                f" files {(syncs.files - synced[0]) / count:.2f},"
                f" directories {(syncs.directories - synced[1]) / count:.2f}"
            )
            print(
                f"explicit COMMITs per instance (a statement in autocommit not counted): {queries.commits / last:.2f}"
            )
            print("SQL statements per instance (last push):")
            for words, number in queries.statements.most_common():
                print(f"  {number / last:6.2f}  {words}")
            if args.strace is not None:
                print_syscalls(Path(args.strace), count, names.names)
            if args.answer_times:
                answers.report(count)
        threads.on = True
        profiled_count = 0
        for files in profiled:
            push(port, files, args.parallel)
            profiled_count += len(files)
        threads.on = False
    finally:
        server.shutdown()
    stats = threads.stats()
    if stats is None:
        return
    if args.dump:
        stats.dump_stats(args.dump)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(order).print_stats(args.top)
        print(f"\n==== by {order}, {profiled_count} instances ====")
        print(out.getvalue())


if __name__ == "__main__":
    main()
