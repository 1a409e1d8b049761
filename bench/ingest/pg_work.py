#!/usr/bin/env python
"""PostgreSQL's work per received instance, counted: statements, transactions, rows, WAL
bytes and the backends' CPU, on a PostgreSQL cluster of the run's own.

run.py times pushes on the machine's shared PostgreSQL, where every other client's WAL and
CPU are mixed in. Here the receiver (`manage.py dicomnode`, the same one run.py starts)
writes to a cluster this script makes for the run (initdb in a temporary directory, a
Unix socket there, no TCP; pg_stat_statements loaded, autovacuum off so that only the
receiver writes): the WAL written during a push is then the receiver's alone
(pg_current_wal_lsn before and after, and pg_waldump's record counts for the range), as
are the statements (pg_stat_statements), the rows (pg_stat_user_tables) and the backends'
CPU (/proc/<pid>/schedstat of every backend of the run's database, in nanoseconds) and
the WAL's writes and flushes (pg_stat_wal: the commits a flush served). What an active
backend waits for is sampled as run.py --where does (Lock:transactionid is a row lock
held by another association's transaction).

Each push is set (a) (200 x 40 KB CT, one series; `--set b`: 100 x 530 KB) sent by dcmtk
storescu over 1 or 4 associations into a new receiver on a new database, after a one-
instance warm-up study; the receivers of this tree, of `--before-repo` and of each
`--variant NAME=DIR` (steps of one change) alternate. Counts hold under load; the CPU
figures rise with it (read them side by side).

    .venv/bin/python bench/ingest/pg_work.py [--before-repo DIR] [--variant NAME=DIR ...]
        [--parallel 1,4] [--rounds 2] [--processes 2] [--set a] [--statements]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    AE_TITLE,
    BASE_DIR,
    CALLING,
    PYTHON,
    SEED,
    active_waits,
    free_port,
    stop,
    wait_for_port,
    write_ct_series,
)

MAX_PDU = 131072
SETS = {"a": (200, 140, 140), "b": (100, 512, 512)}
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PSQL = ["psql", "-U", "postgres"]
# The statements listed with --statements: those of the instances, and of the associations.
STATEMENTS_LISTED = 16
TABLES = ("cloudpacs_instance", "cloudpacs_series", "cloudpacs_study", "cloudpacs_unsyncedfile")


# ---------------------------------------------------------------- the cluster


class Cluster:
    """A PostgreSQL cluster of this run's own: trust authentication on a Unix socket in its
    directory, the shared server's durability (fsync, synchronous_commit on, full page
    writes), checkpoints only when asked."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "pg"
        self.dir.mkdir()
        self.port = free_port()
        self.user: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            owner = pwd.getpwnam("postgres")
            os.chown(workdir, owner.pw_uid, owner.pw_gid)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.user = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        subprocess.run(
            [*self.user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = ''\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n"
                "pg_stat_statements.track_utility = on\nautovacuum = off\nmax_connections = 60\n"
                "checkpoint_timeout = 1h\nmax_wal_size = 8GB\nwal_keep_size = 2GB\nshared_buffers = 128MB\n"
                "track_wal_io_timing = off\n"
            )
        self.data = data
        subprocess.run(
            [*self.user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "start"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.postmaster = int((data / "postmaster.pid").read_text().split()[0])
        # In template1: every database made afterwards has it.
        self.sql("CREATE EXTENSION pg_stat_statements", "template1")

    def url(self, database: str) -> str:
        return f"postgres://postgres@/{database}?host={self.dir}&port={self.port}"

    def sql(self, text: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [*PSQL, "-h", str(self.dir), "-p", str(self.port), "-d", database, "-F", "\x1f", "-qtAc", text],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def rows(self, text: str, database: str = "postgres") -> list[list[str]]:
        out = self.sql(text, database)
        return [line.split("\x1f") for line in out.splitlines() if line]

    def waldump_stats(self, start: str, end: str) -> dict[str, tuple[int, int, int]]:
        """{resource manager: (records, record bytes, full-page image bytes)} between two LSNs."""
        out = subprocess.run(
            [
                *self.user,
                str(PG_BIN / "pg_waldump"),
                "-p",
                str(self.data / "pg_wal"),
                "-s",
                start,
                "-e",
                end,
                "--stats",
            ],
            capture_output=True,
            text=True,
        ).stdout
        stats: dict[str, tuple[int, int, int]] = {}
        for line in out.splitlines():
            # "Heap    123 ( 45.60)   7890 ( 12.30)   0 (  0.00)   7890 ( 12.30)"
            numbers = re.findall(r"(\d+)\s+\(\s*[\d.]+\)", line)
            name = line.split()[0] if line.split() else ""
            if len(numbers) == 4 and name not in {"Type", "Total"}:
                stats[name] = (int(numbers[0]), int(numbers[1]), int(numbers[2]))
        return stats

    def stop(self) -> None:
        subprocess.run(
            [*self.user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
        )


# ---------------------------------------------------------------- processes


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                found.extend(int(child) for child in listed.read().split())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return found


def tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children(current))
    return found


def cpu_ns(pid: int) -> int:
    """Time on a CPU of every thread of a process so far (schedstat, nanoseconds); the
    threads that ended are in the process's own figure only through /proc/<pid>/stat, so
    for the receiver's tree that is used instead."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return 0


def tree_cpu_seconds(pid: int) -> float:
    ticks = 0
    for current in tree(pid):
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0")[0].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


class BackendSampler:
    """Every `interval`: the CPU of each backend of `database` (one that starts during the
    push counts from zero, one that ends keeps its last figure) and what each active one
    waits for."""

    def __init__(self, cluster: Cluster, database: str, interval: float = 0.01) -> None:
        self.cluster, self.database, self.interval = cluster, database, interval
        self.start: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.waits: Counter[str] = Counter()
        self.samples = 0
        self.own: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def backends(self) -> list[int]:
        return [
            child
            for child in children(self.cluster.postmaster)
            if child != self.own and f" {self.database} " in command(child)
        ]

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.cluster.dir), port=self.cluster.port, user="postgres", dbname=self.database, autocommit=True
        ) as connection:
            self.own = connection.info.backend_pid
            for pid in self.backends():
                self.start[pid] = cpu_ns(pid)
            self._ready.set()
            cursor = connection.cursor()
            while True:
                for pid in self.backends():
                    self.start.setdefault(pid, 0)
                    self.last[pid] = cpu_ns(pid)
                self.samples += 1
                self.waits.update(active_waits(cursor))
                if self._stop.wait(self.interval):
                    break
            for pid in self.backends():
                self.last[pid] = cpu_ns(pid)

    @property
    def cpu_seconds(self) -> float:
        return sum(ns - self.start.get(pid, 0) for pid, ns in self.last.items()) / 1e9

    def __enter__(self) -> BackendSampler:
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- a push


def generate(workdir: Path, which: str) -> tuple[list[Path], list[Path]]:
    count, rows, columns = SETS[which]
    made = []
    for name, n in ((which, count), ("warmup", 1)):
        folder = workdir / "sets" / name
        write_ct_series(folder, n, rows, columns, patient_id="BENCH1", accession="A1")
        made.append(sorted(folder.glob("*.dcm")))
    return made[0], made[1]


def push(port: int, files: list[Path], parallel: int) -> float:
    groups = [group for group in (files[i::parallel] for i in range(parallel)) if group]
    started = time.perf_counter()
    clients = [
        subprocess.Popen(
            ["storescu", "-aet", CALLING, "-aec", AE_TITLE, "--max-pdu", str(MAX_PDU), "127.0.0.1", str(port)]
            + [str(path) for path in group],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    failures = [
        err.decode(errors="replace")[-300:]
        for client in clients
        for _, err in [client.communicate()]
        if client.returncode
    ]
    if failures:
        raise RuntimeError("storescu failed: " + " | ".join(failures))
    return time.perf_counter() - started


@dataclass
class Measure:
    seconds: float = 0.0
    wal_bytes: int = 0
    wal: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    backend_cpu: float = 0.0
    receiver_cpu: float = 0.0
    statements: dict[str, tuple[int, int]] = field(default_factory=dict)  # query -> (calls, rows)
    tables: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # ins, upd, hot, del
    waits: Counter[str] = field(default_factory=Counter)
    samples: int = 0
    wal_writes: int = 0
    wal_syncs: int = 0


def table_counts(cluster: Cluster, database: str) -> dict[str, tuple[int, int, int, int]]:
    # Only this file's table names go into the text.
    rows = cluster.rows(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"  # noqa: S608
        f" WHERE relname IN ({', '.join(repr(name) for name in TABLES)})",
        database,
    )
    return {row[0]: (int(row[1]), int(row[2]), int(row[3]), int(row[4])) for row in rows}


def wal_io(cluster: Cluster) -> tuple[int, int]:
    """The cluster's WAL writes and flushes (fdatasync) so far, as its backends have
    reported them (at the latest when they end): a commit waits for one flush unless
    another backend's flush covered its record (group commit)."""
    writes, syncs = cluster.rows("SELECT wal_write, wal_sync FROM pg_stat_wal")[0]
    return int(writes), int(syncs)


def wait_quiet(cluster: Cluster, database: str, receiver: subprocess.Popen, most: float = 120.0) -> None:
    """The warm-up study handed over, then the receiver's tree idle for half a second."""
    deadline = time.monotonic() + most
    while cluster.sql("SELECT count(*) FROM cloudpacs_study WHERE status = 'receiving'", database) != "0":
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up study was not handed over")
        time.sleep(0.25)
    before = tree_cpu_seconds(receiver.pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu_seconds(receiver.pid)
        if now - before < 0.02:
            return
        before = now


def run_once(
    cluster: Cluster,
    repo: Path,
    template: str,
    files: list[Path],
    warmup: list[Path],
    parallel: int,
    processes: int,
    workdir: Path,
) -> Measure:
    database = "yunying_pg_work_run"
    cluster.sql(f"DROP DATABASE IF EXISTS {database}")
    cluster.sql(f"CREATE DATABASE {database} TEMPLATE {template}")
    rundir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    env = {
        **os.environ,
        "DICOM_RECEIVER_PROCESSES": str(processes),
        "DATABASE_URL": cluster.url(database),
        "STORAGE_ROOT": str(rundir / "storage"),
        "DICOM_AE_TITLE": AE_TITLE,
        "DICOM_MAX_PDU": str(MAX_PDU),
        "STUDY_STABLE_SECONDS": "2",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "CELERY_BROKER_URL": "",
    }
    port = free_port()
    receiver = subprocess.Popen(
        [PYTHON, "manage.py", "dicomnode", "--host", "127.0.0.1", "--port", str(port)],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(rundir / "receiver.log", "w"),  # noqa: SIM115 (the receiver's, closed with it)
    )
    measure = Measure()
    try:
        wait_for_port(port, receiver)
        push(port, warmup, 1)
        wait_quiet(cluster, database, receiver)
        cluster.sql("SELECT pg_stat_statements_reset()", database)
        tables_before = table_counts(cluster, database)
        lsn_before = cluster.sql("SELECT pg_current_wal_insert_lsn()")
        writes_before, syncs_before = wal_io(cluster)
        cpu_before = tree_cpu_seconds(receiver.pid)
        with BackendSampler(cluster, database) as sampler:
            measure.seconds = push(port, files, parallel)
        measure.receiver_cpu = tree_cpu_seconds(receiver.pid) - cpu_before
        lsn_after = cluster.sql("SELECT pg_current_wal_insert_lsn()")
        measure.wal_bytes = int(cluster.sql(f"SELECT pg_wal_lsn_diff('{lsn_after}', '{lsn_before}')"))
        # Two shapes of one statement may share their first characters: summed by text.
        statements: dict[str, tuple[int, int]] = {}
        for text, calls, rows in cluster.rows(
            "SELECT regexp_replace(left(query, 160), '\\s+', ' ', 'g'), calls, rows FROM pg_stat_statements"
            " JOIN pg_database d ON d.oid = dbid WHERE d.datname = current_database()"
            " AND query NOT LIKE '%pg_stat_activity%'",
            database,
        ):
            known = statements.get(text, (0, 0))
            statements[text] = (known[0] + int(calls), known[1] + int(rows))
        measure.statements = dict(sorted(statements.items(), key=lambda item: -item[1][0]))
        measure.backend_cpu = sampler.cpu_seconds
        measure.waits, measure.samples = sampler.waits, sampler.samples
        measure.wal = cluster.waldump_stats(lsn_before, lsn_after)
        # A backend reports its rows when it ends (or, idle, within seconds):
        # the receiver stopped first, its backends gone.
        stop(receiver)
        deadline = time.monotonic() + 30
        while sampler.backends() and time.monotonic() < deadline:
            time.sleep(0.1)
        tables_after = table_counts(cluster, database)
        # Its backends report their WAL writes and flushes when they end, as their rows.
        writes_after, syncs_after = wal_io(cluster)
        measure.wal_writes, measure.wal_syncs = writes_after - writes_before, syncs_after - syncs_before
        measure.tables = {
            name: tuple(
                a - b for a, b in zip(tables_after.get(name, (0,) * 4), tables_before.get(name, (0,) * 4), strict=True)
            )  # type: ignore[misc]
            for name in TABLES
        }
        stored = int(cluster.sql("SELECT count(*) FROM cloudpacs_instance", database))
        if stored != len(files) + len(warmup):
            raise RuntimeError(f"{stored} instances indexed, {len(files) + len(warmup)} sent")
    finally:
        stop(receiver)
        shutil.rmtree(rundir, ignore_errors=True)
    return measure


# ---------------------------------------------------------------- report


def per(values: list[float], count: int, scale: float = 1.0) -> str:
    return f"{statistics.median(values) * scale / count:.2f}"


def report(label: str, runs: list[Measure], count: int, show_statements: bool) -> None:
    print(f"  {label}: {len(runs)} pushes, {statistics.median(count / m.seconds for m in runs):.1f} inst/s")
    print(
        f"    per instance: WAL {per([m.wal_bytes for m in runs], count, 1)} bytes,"
        f" backends' CPU {per([m.backend_cpu for m in runs], count, 1000)} ms"
        f" (each push: {', '.join(f'{m.backend_cpu * 1000 / count:.2f}' for m in runs)}),"
        f" receiver's CPU {per([m.receiver_cpu for m in runs], count, 1000)} ms"
    )
    wal = runs[-1].wal
    records = sum(v[0] for v in wal.values())
    fpi = sum(v[2] for v in wal.values())
    print(
        f"    WAL flushes per instance {per([m.wal_syncs for m in runs], count)} (to the receiver's stop)"
        f" (writes {per([m.wal_writes for m in runs], count)}),"
        f" records per instance {records / count:.2f}"
        f" (last push; full-page images {fpi / count:.0f} bytes/inst): "
        + ", ".join(
            f"{name} {v[0] / count:.2f} ({v[1] / count:.0f} B)"
            for name, v in sorted(wal.items(), key=lambda i: -i[1][1])
            if v[0]
        )
    )
    tables = runs[-1].tables
    print(
        "    rows per instance (ins/upd/hot/del): "
        + ", ".join(
            f"{name.removeprefix('cloudpacs_')} " + "/".join(f"{v / count:.2f}" for v in values)
            for name, values in tables.items()
        )
    )
    calls = [sum(c for c, _ in m.statements.values()) for m in runs]
    print(f"    statements per instance {per(calls, count)} (pg_stat_statements, all kinds)")
    if show_statements:
        for query, (n, rows) in list(runs[-1].statements.items())[:STATEMENTS_LISTED]:
            print(f"      {n / count:6.2f}/inst {rows:6d} rows  {query[:110]}")
    samples = sum(m.samples for m in runs)
    waits: Counter[str] = sum((m.waits for m in runs), Counter())
    if samples:
        print(
            "    active backends per sample: "
            + ", ".join(f"{event} {n / samples:.2f}" for event, n in waits.most_common(6))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-repo", type=Path, help="another checkout, run alternately as 'before'")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a further checkout, run alternately under NAME (repeatable): steps of one change in one run",
    )
    parser.add_argument("--parallel", default="1,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--set", default="a", choices=sorted(SETS))
    parser.add_argument("--statements", action="store_true", help="list the statements of the last push")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    parallels = [int(p) for p in args.parallel.split(",")]
    repos = [("after", BASE_DIR)] + ([("before", args.before_repo.resolve())] if args.before_repo else [])
    for variant in args.variant:
        name, _, directory = variant.partition("=")
        if not name.isidentifier() or not directory:
            parser.error(f"--variant {variant!r}: NAME=DIR")
        repos.append((name, Path(directory).resolve()))

    workdir = Path(tempfile.mkdtemp(prefix="pg-work-"))
    cluster = Cluster(workdir)
    try:
        files, warmup = generate(workdir, args.set)
        templates = {}
        for name, repo in repos:
            template = f"yunying_pg_work_{name}"
            cluster.sql(f"CREATE DATABASE {template}")
            env = {**os.environ, "DATABASE_URL": cluster.url(template), "CELERY_BROKER_URL": ""}
            subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=repo, env=env, check=True)
            subprocess.run([PYTHON, "manage.py", "shell", "-c", SEED], cwd=repo, env=env, check=True)
            cluster.sql("VACUUM ANALYZE", template)
            templates[name] = template
        print(
            f"load {os.getloadavg()[0]:.1f} at the start; set ({args.set}), {len(files)} instances,"
            f" {args.processes} receiver process(es)",
            flush=True,
        )
        results: dict[tuple[str, int], list[Measure]] = {}
        for _ in range(args.rounds):
            for parallel in parallels:
                for name, repo in repos:
                    measure = run_once(cluster, repo, templates[name], files, warmup, parallel, args.processes, workdir)
                    results.setdefault((name, parallel), []).append(measure)
                    print(
                        f"  .. {name} x{parallel}: {len(files) / measure.seconds:.1f} inst/s,"
                        f" load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        for parallel in parallels:
            print(f"\n{parallel} association(s):")
            for name, _ in repos:
                report(name, results[(name, parallel)], len(files), args.statements)
        print(f"\nload {os.getloadavg()[0]:.1f} at the end")
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
