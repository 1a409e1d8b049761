"""Every process's CPU during a push, so that a push's budget of the machine's cores adds
up: what run_queue.py's sampler names (the receiver, the run's PostgreSQL backends, the
storescu clients) and all the rest of /proc, in groups, with the idle.

`snapshot()` reads every thread's time on a CPU (/proc/<pid>/task/<tid>/schedstat, in
ns: what the scheduler charged it, the softirq work it ran included on these kernels,
which account interrupts by tick, not apart) and what each process is; two snapshots
around a push give each group's time (`groups`). A thread that ended between the two is
not in the second: unless its process ended and was waited for (`ended`), its time is in no
group, and a push's `budget` shows it as `unseen`,
with what /proc/stat's idle and steal figures do not cover (they are read in ticks of
10 ms; the rest in ns). The sampler's processes are left to the sampler, which reads
them every 25 ms and so sees the association threads that end with the push.

Groups: kernel threads by name prefix (`kernel kworker`, `kernel jbd2`, `kernel
ksoftirqd`, `kernel rcu`, `kernel other`), `bench` (the benchmark's own process: its
sampler's thread, the wire tap), `bench accounting` (these snapshots: the half of each
that falls in a window from the middle of one to the middle of the other), `bench children` (its children that are
neither receiver nor client: the speed probe), `postgres other` (the PostgreSQL server's
processes that serve no backend of the run: the WAL writer, checkpointer, background
writer, autovacuum, other databases' backends), `rest` (everything else on the machine:
other jobs) and `ended` (processes that ended during the window, from the children's CPU
ticks their parents gained: 10 ms each, less what the first snapshot saw of them).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

PF_KTHREAD = 0x00200000
# The kernel threads' prefixes reported apart: the journal (jbd2), the workqueues'
# workers (writeback and block I/O among them), deferred interrupt work and RCU.
KERNEL_GROUPS = ("kworker", "jbd2", "ksoftirqd", "rcu")
GROUPS = (
    *(f"kernel {name}" for name in (*KERNEL_GROUPS, "other")),
    "bench",
    "bench accounting",
    "bench children",
    "postgres other",
    "rest",
    "ended",
)


@dataclass(frozen=True)
class Process:
    comm: str
    parent: int
    kernel: bool
    postgres: bool
    # CPU ticks of its children that ended and that it waited for (cutime + cstime).
    children_ticks: int = 0
    # Its own CPU ticks, its ended threads' included (utime + stime).
    own_ticks: int = 0


@dataclass
class Snapshot:
    processes: dict[int, Process]
    threads: dict[int, tuple[int, int]]  # thread id -> (process id, ns on a CPU)
    cost_ns: int = 0  # the CPU time the snapshot took (its thread's)


def read_process(pid: int) -> Process | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state, parent, ..., flags is the 9th field of the line, the children's
    # user and system ticks the 16th and 17th.
    parent, flags, children = int(fields[1]), int(fields[6]), int(fields[13]) + int(fields[14])
    own = int(fields[11]) + int(fields[12])
    postgres = comm == "postgres" or comm.startswith("postgres:")
    return Process(comm, parent, bool(flags & PF_KTHREAD), postgres, children, own)


def snapshot() -> Snapshot:
    started = time.thread_time_ns()
    processes: dict[int, Process] = {}
    threads: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        process = read_process(pid)
        if process is None:
            continue
        processes[pid] = process
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                    threads[int(task)] = (pid, int(stat.read().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
    return Snapshot(processes, threads, time.thread_time_ns() - started)


def kernel_group(comm: str) -> str:
    """`kworker/1:1H-kblockd` -> kworker, `jbd2/vda1-8` -> jbd2, `ksoftirqd/0` ->
    ksoftirqd, `rcu_preempt` -> rcu, `kswapd0` -> other."""
    prefix = comm.split("/", 1)[0] if "/" in comm else re.sub(r"[\d.]+$", "", comm)
    for name in KERNEL_GROUPS:
        if prefix == name or (name == "rcu" and prefix.startswith("rcu")):
            return f"kernel {name}"
    return "kernel other"


def descendants(root: int, processes: dict[int, Process]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, process in processes.items():
        children.setdefault(process.parent, []).append(pid)
    found, pending = set(), [root]
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending.extend(children.get(current, ()))
    return found


def group_of(pid: int, process: Process, bench: set[int], bench_root: int) -> str:
    if process.kernel:
        return kernel_group(process.comm)
    if pid == bench_root:
        return "bench"
    if pid in bench:
        return "bench children"
    if process.postgres:
        return "postgres other"
    return "rest"


def groups(
    before: Snapshot, after: Snapshot, named: Iterable[int], bench_root: int | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """(ms on a CPU by group, ms by process name within `rest`) between two snapshots, the
    processes in `named` left out (counted apart); a thread first seen in `after` counted
    from zero. `bench_root` is the benchmark's process (default this one)."""
    named = set(named)
    processes = {**before.processes, **after.processes}
    root = os.getpid() if bench_root is None else bench_root
    bench = descendants(root, processes)
    totals = dict.fromkeys(GROUPS, 0.0)
    rest: dict[str, float] = {}
    for tid, (pid, ns) in after.threads.items():
        if pid in named:
            continue
        _, start = before.threads.get(tid, (pid, 0))
        ms = (ns - start) / 1e6
        process = processes[pid]
        group = group_of(pid, process, bench, root)
        totals[group] += ms
        if group == "rest":
            rest[process.comm] = rest.get(process.comm, 0.0) + ms
    # Half of each snapshot falls in a window from the middle of one to that of the other.
    own = (before.cost_ns + after.cost_ns) / 2 / 1e6
    totals["bench"] -= own
    totals["bench accounting"] += own
    # Processes that ended during the window: what their parents' children's ticks gained,
    # less what the first snapshot had already seen of them. The bench's own children
    # (storescu: named) and the named processes' are left out.
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    parents = {
        pid for pid, process in after.processes.items() if pid in before.processes and pid not in named and pid != root
    }
    for pid in parents:
        gained = (after.processes[pid].children_ticks - before.processes[pid].children_ticks) * tick_ms
        if gained:
            totals["ended"] += gained
            name = f"(ended, under {after.processes[pid].comm})"
            rest[name] = rest.get(name, 0.0) + gained
    # What a waited-for process had used before the window, its ended threads and its own
    # waited-for children included, through any of its ancestors that ended too.
    vanished = {pid for pid in before.processes if pid not in after.processes and pid not in named}
    for pid in vanished:
        ancestor = before.processes[pid].parent
        while ancestor in vanished:
            ancestor = before.processes[ancestor].parent
        if ancestor in parents:
            seen = (before.processes[pid].own_ticks + before.processes[pid].children_ticks) * tick_ms
            totals["ended"] -= seen
            name = f"(ended, under {after.processes[ancestor].comm})"
            rest[name] = rest.get(name, 0.0) - seen
    return totals, rest


def read_stat() -> tuple[list[float], int]:
    """/proc/stat's first line (user, nice, system, idle, iowait, irq, softirq, steal:
    ticks) and its count of processes and threads created since boot."""
    forks = 0
    with open("/proc/stat") as stat:
        times = [float(field) for field in stat.readline().split()[1:9]]
        for line in stat:
            if line.startswith("processes "):
                forks = int(line.split()[1])
    return times, forks


def idle_steal_ms(before: list[float], after: list[float]) -> tuple[float, float]:
    """Idle (iowait included) and stolen ms of every CPU between two readings of
    /proc/stat's first line (user, nice, system, idle, iowait, irq, softirq, steal)."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    delta = [a - b for a, b in zip(after, before, strict=True)]
    return (delta[3] + delta[4]) * tick_ms, delta[7] * tick_ms


def budget(
    cores: int, window_ms: float, named: dict[str, float], others: dict[str, float], idle: float, steal: float
) -> dict[str, float]:
    """The cores' time over the window and where it went, in ms: `cores` the window's
    total, the named processes and the groups as given, `idle`, `steal`, and `unseen`
    what is left (threads ended during the window outside the named ones, tick rounding
    of idle and steal): cores = named + groups + idle + steal + unseen."""
    total = cores * window_ms
    seen = sum(named.values()) + sum(others.values()) + idle + steal
    return {"cores": total, **named, **others, "idle": idle, "steal": steal, "unseen": total - seen}
