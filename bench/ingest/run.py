#!/usr/bin/env python
"""DICOM ingest benchmark: the Yunying receiver beside a bare pynetdicom SCP, dcmtk storescp
and Orthanc.

Pushes three sets with dcmtk storescu over loopback, once with one association and once
with four in parallel, each run into an empty receiver, and prints instances/s, MB/s, the
receiver's peak memory (resident set of the receiver's process tree and of its largest
process, sampled) and its CPU time per instance, with ratios to the references: a bare
pynetdicom SCP that only writes (and with `pynetdicom-fsync` fsyncs) the received bytes
(bench/ingest/bare_scp.py: what pynetdicom allows), storescp and Orthanc.
`--yunying-processes 1,2` also runs Yunying with DICOM_RECEIVER_PROCESSES=2
(`yunying-sqlite-x2`, `yunying-postgresql-x2`).

  (a) 200-instance small CT series (about 40 KB each)
  (b) 100-slice 512 x 512 16-bit CT series
  (c) three 3000 x 2500 16-bit DX images

storescp and Orthanc listen on every address, so the whole benchmark runs in a private
network namespace (`unshare -n`, loopback only); all receivers run there alike. Every
client has TCP_NODELAY=1 (dcmtk leaves Nagle on otherwise) and every receiver a 128 KB
maximum PDU.

    .venv/bin/python bench/ingest/run.py [--runs 3] [--memory-gb 3] [--only yunying-sqlite]
    .venv/bin/python bench/ingest/run.py --sets dx --parallel 1 --runs 1 --only yunying-sqlite --only storescp
    .venv/bin/python bench/ingest/run.py --only yunying-sqlite --only yunying-sqlite-s3   # the object store beside disk

Each cell's line gives every run's rate and how fast the cores ran during it
(bench/ingest/speed_probe.py: these virtual machines' cores flip between two speeds).

Two rates, side by side. The first (inst/s, MB/s) runs from starting the storescu clients
to their exit: each client's start-up (about 20 ms of CPU, its dictionary above all) and
release are in it, on the same two cores as the receiver. The second (`wire`, and the
table's last two columns) is read at the server's side of the wire (bench/ingest/wire.py):
from the first association's A-ASSOCIATE-RQ reaching the receiver's port to its last
C-STORE answer, the same for every receiver. It leaves out the first client's start-up
and every client's release and exit, not the start-ups of the other clients that fall
inside the window (`spread`: from the first association's request to the last's).

`--where` also prints, for each cell, the CPU per instance of each receiver process (the
parent, each worker, the stability sweep's), of the PostgreSQL backends and of the storescu
clients, and what the run's active PostgreSQL backends waited for (sampled every 20 ms):
where the time of four associations goes.

yunying-sqlite-s3 is yunying-sqlite with STORAGE_BACKEND=s3 against moto's S3 server on
loopback (a Python emulator, not a real store: it compares the code paths, not MinIO).

It re-executes itself inside the namespace (needs root or user namespaces).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import (
    AE_TITLE,
    BASE_DIR,
    CALLING,
    PG_SOCKET_DIR,
    PYTHON,
    active_waits,
    free_port,
    image,
    pg_url,
    psql,
    random_pixels,
    seed_database,
    start_receiver,
    stop,
    wait_for_port,
)
from speed_probe import SpeedProbe
from wire import WireTap

MAX_PDU = 131072
# The databases of this run: two benchmarks at once on one PostgreSQL must not drop each other's.
RUN_TAG = os.getpid()
SET_NAMES = {"small": "a", "ct": "b", "dx": "c"}
WARMUP_INSTANCES = 4


# ---------------------------------------------------------------- data sets


@dataclass
class DataSet:
    name: str
    label: str
    files: list[Path]

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def generate(workdir: Path) -> list[DataSet]:
    from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, generate_uid

    def make(sop_class: str, modality: str, rows: int, cols: int, study: str, series: str, number: int) -> Any:
        pixels = random_pixels(rows, cols, number)
        return image(
            sop_class,
            modality,
            rows,
            cols,
            study=study,
            series=series,
            number=number,
            patient_id="BENCH1",
            accession="A1",
            pixels=pixels,
            institution="漩涡镇中心卫生院",
            station="CT01",
        )

    specs = [
        ("a", "small CT (200 x 40 KB)", CTImageStorage, "CT", 140, 140, 200),
        ("b", "CT 512x512 (100 x 530 KB)", CTImageStorage, "CT", 512, 512, 100),
        ("c", "DX 3000x2500 (3 x 15 MB)", DigitalXRayImageStorageForPresentation, "DX", 3000, 2500, 3),
    ]
    # The warm-up: a few instances of another study, one for each of up to four associations
    # at once (run_once).
    specs.append(("warmup", "warm-up (4 x 40 KB)", CTImageStorage, "CT", 140, 140, WARMUP_INSTANCES))
    sets = []
    for name, label, sop_class, modality, rows, cols, count in specs:
        directory = workdir / "sets" / name
        marker = directory / ".complete"
        if not marker.exists() or sum(1 for _ in directory.glob("*.dcm")) != count:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            study, series = generate_uid(), generate_uid()
            for number in range(1, count + 1):
                make(sop_class, modality, rows, cols, study, series, number).save_as(
                    directory / f"{number:04d}.dcm", enforce_file_format=True
                )
            marker.touch()
        sets.append(DataSet(name, label, sorted(directory.glob("*.dcm"))))
    return sets


def repeat_set(workdir: Path, dataset: DataSet, copies: int) -> DataSet:
    """`dataset` sent `copies` times as distinct instances (SOP Instance UIDs patched in
    place, same length): the three DX images alone take a fraction of a second, too short
    to measure on a busy machine."""
    from pydicom import dcmread

    if copies <= 1:
        return dataset
    directory = workdir / "sets" / f"{dataset.name}x{copies}"
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for source in dataset.files:
        data = source.read_bytes()
        uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID).encode()
        for copy in range(copies):
            path = directory / f"{source.stem}-{copy:03d}.dcm"
            if not path.exists():
                suffix = f"9{copy:03d}".encode()
                path.write_bytes(data.replace(uid, uid[: len(uid) - len(suffix)] + suffix))
            files.append(path)
    count = len(files)
    label = dataset.label.replace(f"({len(dataset.files)} x", f"({count} x")
    return DataSet(dataset.name, label, files)


def generate_memory_set(workdir: Path, gigabytes: float) -> DataSet:
    """Distinct 15 MB DX instances adding up to `gigabytes`: the template's bytes with
    the SOP Instance UID patched in place (same length), so generation is a copy."""
    from pydicom import dcmread

    template = sorted((workdir / "sets" / "c").glob("*.dcm"))[0]
    data = template.read_bytes()
    uid = str(dcmread(template, stop_before_pixels=True).SOPInstanceUID).encode()
    count = max(1, int(gigabytes * 1e9 / len(data)))
    directory = workdir / "sets" / f"mem{count}"
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for number in range(count):
        path = directory / f"{number:05d}.dcm"
        if not path.exists():
            suffix = f"{number:05d}".encode()
            new_uid = uid[: len(uid) - len(suffix)] + suffix
            path.write_bytes(data.replace(uid, new_uid))
        files.append(path)
    return DataSet("mem", f"DX x {count} ({count * len(data) / 1e9:.1f} GB)", files)


# ---------------------------------------------------------------- receivers


def tree_pids(pid: int) -> list[int]:
    found = []
    pending = [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(child) for child in children.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return found


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    return sum(rss_kb(current) for current in tree_pids(pid))


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree so far (children that exited not
    included: the receivers' processes live as long as the run)."""
    return sum(tree_cpu_split(pid))


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process tree so far: threads that ended
    included, processes that ended not."""
    ticks = [0, 0]
    for current in tree_pids(pid):
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks[0] += int(fields[11])
            ticks[1] += int(fields[12])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    tick = os.sysconf("SC_CLK_TCK")
    return ticks[0] / tick, ticks[1] / tick


def thread_switches(pid: int) -> dict[int, int]:
    """Voluntary context switches of each thread alive in the process tree, by thread id.
    A thread that waits for the interpreter lock, another lock or its socket sleeps: a
    voluntary switch. The kernel forgets a thread's count when it ends (an association's
    threads end with it), so PeakSampler samples them while the push runs."""
    counts = {}
    for current in tree_pids(pid):
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/status") as status:
                    for line in status:
                        if line.startswith("voluntary_ctxt_switches:"):
                            counts[int(task)] = int(line.split()[1])
                            break
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    return counts


class PeakSampler:
    """Peak memory of the process tree and, for each of its threads, the voluntary
    context switches made while it runs (the last count seen of a thread that ended)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        # The largest single process of the tree (several receiver processes share the port).
        self.peak_process = 0
        self._start = thread_switches(pid)
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def switches(self) -> int:
        return sum(count - self._start.get(tid, 0) for tid, count in self._last.items())

    def _run(self) -> None:
        while True:
            sizes = [rss_kb(current) for current in tree_pids(self.pid)]
            self.peak = max(self.peak, sum(sizes))
            self.peak_process = max([self.peak_process, *sizes])
            self._last.update(thread_switches(self.pid))
            if self._stop.wait(self.interval):
                break
        self._last.update(thread_switches(self.pid))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def process_ticks(pid: int) -> int:
    """User + system CPU ticks of one process (its threads that ended included)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return 0


def command_line(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except (FileNotFoundError, ProcessLookupError):
        return []


def postmaster_pid() -> int | None:
    """The PostgreSQL server's main process (its backends are its children)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            args = command_line(int(entry))
            if args and args[0].endswith("/postgres") and "-D" in args:
                return int(entry)
    return None


class WhereSampler:
    """--where: where the time of a push goes. Every `interval` it notes the CPU of each
    receiver process (the parent, each worker, the stability sweep's process), of the
    PostgreSQL backends serving the run's database (one per association: they end with
    it, so the last figure seen is kept) and, on PostgreSQL, what each active backend of
    that database waits for (pg_stat_activity: a row lock held by another association's
    transaction is Lock:transactionid or Lock:tuple, the WAL's fsync IO:WALSync, a
    client that has not sent the next statement Client:ClientRead)."""

    def __init__(self, pid: int, database: str | None, interval: float = 0.02) -> None:
        self.pid, self.database, self.interval = pid, database, interval
        self.postmaster = postmaster_pid() if database else None
        self.start: dict[int, int] = {current: process_ticks(current) for current in tree_pids(pid)}
        self.labels: dict[int, str] = {}
        self.last: dict[int, int] = {}
        self.waits: Counter[str] = Counter()
        self.samples = 0
        self.own_backend: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _label(self, current: int) -> str:
        label = self.labels.get(current)
        if label is None:
            args = command_line(current)
            if current == self.pid:
                label = "receiver"
            elif "--worker" in args:
                label = "worker " + args[args.index("--worker") + 1].rsplit(",", 1)[-1]
            elif args and args[0].startswith("postgres:"):
                label = "postgres"
            else:
                label = "other"
            self.labels[current] = label
        return label

    def _backends(self) -> list[int]:
        if self.postmaster is None or self.database is None:
            return []
        found = []
        for child in tree_pids(self.postmaster)[1:]:
            if child == self.own_backend:
                continue
            args = command_line(child)
            if args and args[0].startswith("postgres:") and f" {self.database} " in args[0]:
                found.append(child)
        return found

    def _run(self) -> None:
        cursor = None
        if self.database is not None:
            import psycopg

            connection = psycopg.connect(host=PG_SOCKET_DIR, user="postgres", dbname=self.database, autocommit=True)
            cursor = connection.cursor()
            # This sampler's own backend, which runs the query below 50 times a second: not
            # the receiver's (counted until run 22, a constant per second of the push).
            self.own_backend = connection.info.backend_pid
        try:
            while True:
                for current in [*tree_pids(self.pid), *self._backends()]:
                    self._label(current)
                    self.last[current] = process_ticks(current)
                if cursor is not None:
                    self.samples += 1
                    self.waits.update(active_waits(cursor))
                if self._stop.wait(self.interval):
                    break
        finally:
            if cursor is not None:
                cursor.connection.close()

    def cpu_by_label(self) -> dict[str, float]:
        """CPU seconds of the push by process label (every PostgreSQL backend together)."""
        tick = os.sysconf("SC_CLK_TCK")
        seconds: dict[str, float] = {}
        for current, ticks in self.last.items():
            label = self.labels[current]
            seconds[label] = seconds.get(label, 0.0) + (ticks - self.start.get(current, 0)) / tick
        return seconds

    def __enter__(self) -> WhereSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Receiver:
    name: str
    start: Callable[[Path, int], subprocess.Popen]
    extra: dict = field(default_factory=dict)
    # Yunying's DICOM_RECEIVER_PROCESSES: the warm-up sends at least one association to each.
    processes: int = 1


# NAME=VALUE pairs of --receiver-env, given to every Yunying receiver (not to the references).
RECEIVER_ENV: dict[str, str] = {}


def yunying_env(rundir: Path, database_url: str, processes: int = 1) -> dict[str, str]:
    return {
        "DICOM_RECEIVER_PROCESSES": str(processes),
        **os.environ,
        **RECEIVER_ENV,
        "DATABASE_URL": database_url,
        "STORAGE_ROOT": str(rundir / "storage"),
        "DICOM_AE_TITLE": AE_TITLE,
        "DICOM_MAX_PDU": str(MAX_PDU),
        "STUDY_STABLE_SECONDS": "2",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "CELERY_BROKER_URL": "",
    }


def _template_tag(repo: Path) -> str:
    """The templates' name part for a checkout: each is made by its own checkout's
    migrations (a checkout from before a migration cannot write to a schema after it)."""
    return "" if repo == BASE_DIR else f"_{hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:8]}"


def prepare_yunying_sqlite(workdir: Path, repo: Path = BASE_DIR) -> Path:
    template = workdir / f"template{_template_tag(repo)}.sqlite3"
    if not template.exists():
        seed_database(repo, yunying_env(workdir, f"sqlite:///{template}"))
        # One file, no WAL side files, so that a copy is a complete database.
        with sqlite3.connect(template) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("PRAGMA journal_mode=DELETE")
    return template


_pg_templates: set[str] = set()


def prepare_yunying_pg(workdir: Path, repo: Path = BASE_DIR) -> str:
    template = f"yunying_bench_ingest_template_{RUN_TAG}{_template_tag(repo)}"
    if template in _pg_templates:
        return template
    if not _pg_templates:
        atexit.register(psql, f"DROP DATABASE IF EXISTS yunying_bench_ingest_run_{RUN_TAG}")
        atexit.register(psql, f"DROP DATABASE IF EXISTS orthanc_bench_ingest_run_{RUN_TAG}")
    _pg_templates.add(template)
    # Dropped at the end (atexit runs last registered first: the runs' databases before it).
    atexit.register(psql, f"DROP DATABASE IF EXISTS {template}")
    psql(f"DROP DATABASE IF EXISTS {template}")
    psql(f"CREATE DATABASE {template}")
    seed_database(repo, yunying_env(workdir, pg_url(template)))
    return template


def start_yunying_sqlite(
    workdir: Path, processes: int = 1, repo: Path = BASE_DIR
) -> Callable[[Path, int], subprocess.Popen]:
    template = prepare_yunying_sqlite(workdir, repo)

    def start(rundir: Path, port: int) -> subprocess.Popen:
        database = rundir / "db.sqlite3"
        shutil.copyfile(template, database)
        env = yunying_env(rundir, f"sqlite:///{database}", processes)
        return start_receiver(repo, env, port, subprocess.DEVNULL, open(rundir / "receiver.log", "w"))

    return start


def start_object_store() -> str:
    """moto's S3 server (the one the tests use: no S3-compatible server of Debian fits
    this machine, docs/operations.md) on a free loopback port; its endpoint. Not in the
    receiver's process tree, so not in its peak memory."""
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(stop, process)
    wait_for_port(port, process)
    return f"http://127.0.0.1:{port}"


def start_yunying_sqlite_s3(workdir: Path) -> Callable[[Path, int], subprocess.Popen]:
    """yunying-sqlite with STORAGE_BACKEND=s3: each run into a new bucket."""
    import boto3

    template = prepare_yunying_sqlite(workdir)
    endpoint = start_object_store()
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106 (the emulator's)
    )

    def start(rundir: Path, port: int) -> subprocess.Popen:
        database = rundir / "db.sqlite3"
        shutil.copyfile(template, database)
        bucket = f"bench-{rundir.name.lower().replace('_', '-')}"[:63]
        client.create_bucket(Bucket=bucket)
        env = {
            **yunying_env(rundir, f"sqlite:///{database}"),
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT_URL": endpoint,
            "S3_BUCKET": bucket,
            "S3_ACCESS_KEY_ID": "bench",
            "S3_SECRET_ACCESS_KEY": "bench",
        }
        return start_receiver(BASE_DIR, env, port, subprocess.DEVNULL, open(rundir / "receiver.log", "w"))

    return start


def start_yunying_pg(
    workdir: Path, processes: int = 1, repo: Path = BASE_DIR
) -> Callable[[Path, int], subprocess.Popen]:
    template = prepare_yunying_pg(workdir, repo)

    def start(rundir: Path, port: int) -> subprocess.Popen:
        name = f"yunying_bench_ingest_run_{RUN_TAG}"
        psql(f"DROP DATABASE IF EXISTS {name}")
        psql(f"CREATE DATABASE {name} TEMPLATE {template}")
        (rundir / "database_url").write_text(pg_url(name))
        env = yunying_env(rundir, pg_url(name), processes)
        return start_receiver(repo, env, port, subprocess.DEVNULL, open(rundir / "receiver.log", "w"))

    return start


def start_storescp(rundir: Path, port: int) -> subprocess.Popen:
    out = rundir / "storage"
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["storescp", "--fork", "-aet", AE_TITLE, "--max-pdu", str(MAX_PDU), "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(rundir / "receiver.log", "w"),
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def start_orthanc(index: str) -> Callable[[Path, int], subprocess.Popen]:
    def start(rundir: Path, port: int) -> subprocess.Popen:
        config = {
            "Name": "bench",
            "StorageDirectory": str(rundir / "storage"),
            "IndexDirectory": str(rundir / "index"),
            "DicomAet": AE_TITLE,
            "DicomPort": port,
            "HttpPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageCompression": False,
            "MaximumPduLength": MAX_PDU,
            "DicomCheckCalledAet": False,
            "Plugins": [],
        }
        if index == "postgresql":
            name = f"orthanc_bench_ingest_run_{RUN_TAG}"
            psql(f"DROP DATABASE IF EXISTS {name}")
            psql(f"CREATE DATABASE {name}")
            config["Plugins"] = ["/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"]
            config["PostgreSQL"] = {
                "EnableIndex": True,
                "EnableStorage": False,
                "Host": PG_SOCKET_DIR,
                "Port": 5432,
                "Database": name,
                "Username": "postgres",
                "Password": "",
                "Lock": False,
            }
        path = rundir / "orthanc.json"
        path.write_text(json.dumps(config))
        return subprocess.Popen(
            ["Orthanc", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=open(rundir / "receiver.log", "w"),
            # Orthanc's DICOM server is dcmtk's: without this its answers wait on Nagle's
            # algorithm and it stores about 20 small instances/s instead of 60-85.
            env={**os.environ, "TCP_NODELAY": "1"},
        )

    return start


# ---------------------------------------------------------------- runs


# --storescu-option: more options for every storescu client (e.g. -R: propose only the
# presentation contexts that the files need, as a modality does, instead of 128).
STORESCU_OPTIONS: list[str] = []


def add_storescu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storescu-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an option for every storescu client, e.g. --storescu-option=-R (repeatable)",
    )


def storescu(port: int, files: list[Path]) -> subprocess.Popen:
    """A storescu client sending `files` over one association, with TCP_NODELAY."""
    options = [*STORESCU_OPTIONS, "-aet", CALLING, "-aec", AE_TITLE, "--max-pdu", str(MAX_PDU)]
    return subprocess.Popen(
        ["storescu", *options, "127.0.0.1", str(port), *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def push(port: int, files: list[Path], parallel: int) -> float:
    groups = [files[i::parallel] for i in range(parallel)]
    groups = [group for group in groups if group]
    started = time.perf_counter()
    clients = [storescu(port, group) for group in groups]
    failures = []
    for client in clients:
        _, err = client.communicate()
        if client.returncode != 0:
            failures.append(err.decode(errors="replace")[-500:])
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError("storescu failed: " + " | ".join(failures))
    return elapsed


@dataclass
class Measure:
    seconds: float
    peak_kb: int
    stored_ok: bool
    cpu_seconds: float = 0.0
    peak_process_kb: int = 0
    system_seconds: float = 0.0
    switches: int = 0  # voluntary context switches of the receiver's threads
    load: float = 0.0  # the machine's load average (1 min) when the push ended
    # How fast the cores ran during the push (bench/ingest/speed_probe.py): µs for a fixed
    # piece of work, lower is faster; about 560 on a fast core here, 1,000 in its slow phase.
    probe_us: float = 0.0
    # --where: CPU seconds by process (receiver, worker N, other, postgres, storescu) and
    # the active PostgreSQL backends' wait events, counted per sample.
    where: dict[str, float] = field(default_factory=dict)
    waits: Counter[str] = field(default_factory=Counter)
    wait_samples: int = 0
    # At the server's side of the wire (bench/ingest/wire.py), seconds: from the first
    # A-ASSOCIATE-RQ reaching the receiver's port to its last C-STORE answer (nan when the
    # tap could not read the loopback device); from the clients' start to that request
    # (the first client's start-up); from the first association's request to the last's.
    wire_seconds: float = float("nan")
    wire_start: float = float("nan")
    wire_spread: float = float("nan")
    wire_answers: int = 0  # the C-STORE answers the tap saw (one per instance)
    # Answers per second while every association was open (wire.Wire.steady_rate).
    wire_steady: float = float("nan")


def index_count(receiver: str, rundir: Path, sql: str) -> int:
    """`SELECT count(*) ...` on a Yunying receiver's index (SQLite or PostgreSQL)."""
    if receiver.startswith(("yunying-sqlite", "before-sqlite")):
        with sqlite3.connect(rundir / "db.sqlite3") as db:
            return int(db.execute(sql).fetchone()[0])
    name = urlsplit((rundir / "database_url").read_text()).path.strip("/")
    out = subprocess.run(
        ["psql", "-h", PG_SOCKET_DIR, "-U", "postgres", "-d", name, "-qtAc", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def wait_handed_over(receiver: str, rundir: Path, most: float = 120.0) -> None:
    """Wait until a Yunying receiver's stability sweep has handed over every study it
    received (the warm-up's): on a loaded machine its process may still be loading Django
    when `settle` sees the tree idle, and its first hand-over (the consult, Celery's first
    imports, the metadata) then ran inside the timed push: 0.7 s of CPU at load 17, 2-3 ms
    per instance of set (a), counted as the set's."""
    if not receiver.startswith(("yunying", "before")):
        return
    deadline = time.monotonic() + most
    while index_count(receiver, rundir, "SELECT count(*) FROM cloudpacs_study WHERE status = 'receiving'"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{receiver}: the warm-up study was not handed over in {most:.0f} s")
        time.sleep(0.25)


def count_stored(receiver: str, rundir: Path) -> int:
    if receiver.startswith(("yunying", "before")):
        return index_count(receiver, rundir, "SELECT count(*) FROM cloudpacs_instance")
    return sum(1 for path in (rundir / "storage").rglob("*") if path.is_file() and path.name != "SQLite.db")


def start_pynetdicom(fsync: bool) -> Callable[[Path, int], subprocess.Popen]:
    def start(rundir: Path, port: int) -> subprocess.Popen:
        return subprocess.Popen(
            [PYTHON, str(BASE_DIR / "bench" / "ingest" / "bare_scp.py"), "--port", str(port)]
            + ["--out", str(rundir / "storage"), "--aet", AE_TITLE, "--max-pdu", str(MAX_PDU)]
            + (["--fsync"] if fsync else []),
            stdout=subprocess.DEVNULL,
            stderr=open(rundir / "receiver.log", "w"),
        )

    return start


# The warm-up's study becomes stable after STUDY_STABLE_SECONDS (2) and the sweep, once a
# second, hands it over: wait that out too.
SETTLE_SECONDS = 3.5


def settle(pid: int, at_least: float = SETTLE_SECONDS, idle_cpu: float = 0.02, most: float = 60.0) -> None:
    """Wait `at_least` seconds, then until the receiver's process tree uses less than
    `idle_cpu` seconds of CPU in half a second: what a receiver starts beside its port (the
    stability sweep's process loads Django for seconds after the port listens, on a loaded
    machine longer) and the warm-up's hand-over would otherwise be counted as the set's."""
    time.sleep(at_least)
    deadline = time.monotonic() + most
    before = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu_seconds(pid)
        if now - before < idle_cpu:
            return
        before = now


# --where: sample where the time goes during each push (WhereSampler).
WHERE = False


def run_once(receiver: Receiver, dataset: DataSet, parallel: int, workdir: Path, warmup: DataSet) -> Measure:
    rundir = Path(tempfile.mkdtemp(prefix=f"{receiver.name}-", dir=workdir / "runs"))
    port = free_port()
    process = receiver.start(rundir, port)
    try:
        wait_for_port(port, process)
        # A few instances of another study first, untimed: a receiver that has been running
        # for a while, not one that is still loading code and opening its index. Sent over
        # as many associations at once as the timed push uses, and at least one to each
        # receiver process (the parent hands a connection to the worker holding the fewest):
        # until run 26 one association warmed the first worker only, and the timed push paid
        # the other's first association and the database connections of the rest.
        push(port, warmup.files, min(max(receiver.processes, parallel), len(warmup.files)))
        wait_handed_over(receiver.name, rundir)
        settle(process.pid)
        before = tree_cpu_split(process.pid)
        database = None
        if receiver.name.startswith(("yunying-postgresql", "before-postgresql")):
            database = urlsplit((rundir / "database_url").read_text()).path.strip("/")
        where = WhereSampler(process.pid, database) if WHERE else contextlib.nullcontext()
        clients_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with PeakSampler(process.pid) as sampler, where, SpeedProbe() as probe, WireTap(port) as tap:
            clients_started = time.time()
            seconds = push(port, dataset.files, parallel)
        clients_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        after = tree_cpu_split(process.pid)
        load = os.getloadavg()[0]
        cpu = after[0] + after[1] - before[0] - before[1]
        expected = len(dataset.files) + len(warmup.files)
        stored = count_stored(receiver.name, rundir) if receiver.name != "orthanc-postgresql" else expected
    finally:
        stop(process)
    ok = stored >= expected
    shutil.rmtree(rundir, ignore_errors=True)
    measure = Measure(
        seconds,
        sampler.peak,
        ok,
        cpu,
        sampler.peak_process,
        after[1] - before[1],
        sampler.switches,
        load,
        probe.median_us,
    )
    measure.wire_seconds, measure.wire_spread = tap.wire.seconds, tap.wire.spread
    measure.wire_answers = tap.wire.answers
    measure.wire_steady = tap.wire.steady_rate()
    if tap.wire.requests:
        measure.wire_start = min(tap.wire.requests.values()) - clients_started
    if isinstance(where, WhereSampler):
        # The storescu clients are the only children waited for during the push.
        measure.where = {
            **where.cpu_by_label(),
            "storescu": (clients_after.ru_utime + clients_after.ru_stime)
            - (clients_before.ru_utime + clients_before.ru_stime),
        }
        measure.waits, measure.wait_samples = where.waits, where.samples
    return measure


def where_line(runs: list[Measure], count: int) -> str:
    """--where's line for a cell: CPU ms per instance by process (medians over the runs),
    then the share of samples in which an active backend waited for each thing."""
    labels = sorted({label for m in runs for label in m.where})
    cpu = ", ".join(
        f"{label} {statistics.median(m.where.get(label, 0.0) for m in runs) * 1000 / count:.2f}" for label in labels
    )
    samples = sum(m.wait_samples for m in runs)
    waits: Counter[str] = sum((m.waits for m in runs), Counter())
    shares = ", ".join(f"{event} {n / samples:.2f}" for event, n in waits.most_common(6)) if samples else ""
    return f"    where (CPU ms/inst): {cpu}" + (f"; active backends per sample: {shares}" if shares else "")


def wire_median(runs: list[Measure], count: int) -> float:
    """The median rate at the server's side of the wire (nan if the tap saw nothing)."""
    seconds = [m.wire_seconds for m in runs if m.wire_seconds == m.wire_seconds]
    return count / statistics.median(seconds) if seconds else float("nan")


def wire_fields(runs: list[Measure], count: int) -> str:
    """The cell line's fields at the server's side of the wire, after the rate from the
    clients' start to their exit (which stays the first figure): the median rate from the
    first A-ASSOCIATE-RQ to the last C-STORE answer, each run's, the first client's start
    before its request and the spread of the associations' requests (ms, medians), and the
    median rate while every association was open."""
    answered = "" if all(m.wire_answers == count for m in runs) else " (answers missed)"
    return (
        f" wire {wire_median(runs, count):.1f} inst/s"
        f" runs {', '.join(f'{count / m.wire_seconds:.1f}' for m in runs)}"
        f" start {statistics.median(m.wire_start for m in runs) * 1000:.0f} ms"
        f" spread {statistics.median(m.wire_spread for m in runs) * 1000:.0f} ms"
        # As the rates above: the median time per instance, inverted.
        f" steady {1 / statistics.median(1 / m.wire_steady if m.wire_steady else math.inf for m in runs):.1f}"
        f" inst/s{answered}"
    )


def time_to_consult(workdir: Path, start: Callable[[Path, int], subprocess.Popen], dataset: DataSet) -> float:
    """Seconds from storescu's last instance acknowledged to the consult's row existing."""
    rundir = Path(tempfile.mkdtemp(prefix="consult-", dir=workdir / "runs"))
    port = free_port()
    process = start(rundir, port)
    try:
        wait_for_port(port, process)
        push(port, dataset.files, 1)
        acknowledged = time.perf_counter()
        with sqlite3.connect(rundir / "db.sqlite3", timeout=30) as db:
            while time.perf_counter() - acknowledged < 60:
                if db.execute("SELECT count(*) FROM consults_consult").fetchone()[0]:
                    return time.perf_counter() - acknowledged
                time.sleep(0.02)
        return float("nan")
    finally:
        stop(process)
        shutil.rmtree(rundir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "yunying-bench-ingest")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", action="append", help="receivers to run (default: all available)")
    parser.add_argument(
        "--sets",
        default="abc",
        help="which sets: letters (abc) or names, comma-separated (small,ct,dx); default all",
    )
    parser.add_argument(
        "--dx-copies",
        type=int,
        default=1,
        help="send the DX set this many times as distinct instances (default 1: three images)",
    )
    parser.add_argument(
        "--parallel",
        default="1,4",
        help="associations in parallel, comma-separated (default 1,4)",
    )
    parser.add_argument("--memory-gb", type=float, default=0.0, help="also push this many GB of DX to Yunying")
    parser.add_argument(
        "--before-repo",
        type=Path,
        default=None,
        help="also run the receiver of this checkout (same migrations), as before-sqlite and before-postgresql",
    )
    parser.add_argument(
        "--yunying-processes",
        default="1",
        help="DICOM_RECEIVER_PROCESSES values to run Yunying with, comma-separated (e.g. 1,2: receivers"
        " yunying-sqlite and yunying-sqlite-x2); default 1",
    )
    parser.add_argument(
        "--receiver-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for every Yunying receiver (repeatable)",
    )
    parser.add_argument(
        "--where",
        action="store_true",
        help="also print where each cell's time went: CPU per instance of each receiver process, of the"
        " PostgreSQL backends and of the storescu clients, and what active backends waited for",
    )
    add_storescu_option(parser)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global WHERE
    WHERE = args.where
    STORESCU_OPTIONS.extend(args.storescu_option)
    for pair in args.receiver_env:
        name, _, value = pair.partition("=")
        RECEIVER_ENV[name] = value

    if not args.inside:
        command = [PYTHON, __file__, "--inside", *sys.argv[1:]]
        inner = "ip link set lo up && exec " + " ".join(f"'{part}'" for part in command)
        sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", inner]))

    workdir: Path = args.workdir
    (workdir / "runs").mkdir(parents=True, exist_ok=True)
    print(f"generating sets in {workdir} ...", flush=True)
    wanted = set()
    for part in args.sets.replace(",", " ").split():
        wanted |= {SET_NAMES[part]} if part in SET_NAMES else set(part)
    generated = generate(workdir)
    warmup = next(s for s in generated if s.name == "warmup")
    sets = [repeat_set(workdir, s, args.dx_copies) if s.name == "c" else s for s in generated if s.name in wanted]
    parallels = [int(n) for n in args.parallel.split(",")]
    print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    receivers: list[Receiver] = []
    for processes in (int(n) for n in args.yunying_processes.split(",")):
        suffix = f"-x{processes}" if processes > 1 else ""
        receivers.append(
            Receiver(f"yunying-sqlite{suffix}", start_yunying_sqlite(workdir, processes), processes=processes)
        )
        if Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
            receivers.append(
                Receiver(f"yunying-postgresql{suffix}", start_yunying_pg(workdir, processes), processes=processes)
            )
    if not args.only or "yunying-sqlite-s3" in args.only:
        receivers.append(Receiver("yunying-sqlite-s3", start_yunying_sqlite_s3(workdir)))
    if args.before_repo:
        # Another checkout's receiver (the code before a change), on the same templates,
        # with as many processes as this one's.
        for processes in (int(n) for n in args.yunying_processes.split(",")):
            suffix = f"-x{processes}" if processes > 1 else ""
            before = args.before_repo
            receivers.append(
                Receiver(
                    f"before-sqlite{suffix}", start_yunying_sqlite(workdir, processes, before), processes=processes
                )
            )
            if Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
                receivers.append(
                    Receiver(
                        f"before-postgresql{suffix}", start_yunying_pg(workdir, processes, before), processes=processes
                    )
                )
    # The reference for the receiver's own path: stock pynetdicom writing the bytes.
    receivers.append(Receiver("pynetdicom", start_pynetdicom(fsync=False)))
    receivers.append(Receiver("pynetdicom-fsync", start_pynetdicom(fsync=True)))
    if shutil.which("storescp"):
        receivers.append(Receiver("storescp", start_storescp))
    if shutil.which("Orthanc"):
        receivers.append(Receiver("orthanc-sqlite", start_orthanc("sqlite")))
        if Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so").exists():
            receivers.append(Receiver("orthanc-postgresql", start_orthanc("postgresql")))
    if args.only:
        receivers = [r for r in receivers if r.name in args.only]

    results: dict[tuple[str, str, int], list[Measure]] = {}
    for dataset in sets:
        size = dataset.total_bytes
        for parallel in parallels:
            # Round-robin over the receivers, so that a change in the machine's load
            # during the benchmark falls on all of them alike.
            for _ in range(args.runs):
                for receiver in receivers:
                    measure = run_once(receiver, dataset, parallel, workdir, warmup)
                    results.setdefault((receiver.name, dataset.name, parallel), []).append(measure)
            for receiver in receivers:
                runs = results[(receiver.name, dataset.name, parallel)]
                seconds = statistics.median(m.seconds for m in runs)
                count = len(dataset.files)
                print(
                    f"{dataset.name} x{parallel} {receiver.name:20s} {count / seconds:7.1f} inst/s "
                    f"{size / seconds / 1e6:7.1f} MB/s peak {max(m.peak_kb for m in runs) / 1024:6.0f} MB"
                    f" (largest process {max(m.peak_process_kb for m in runs) / 1024:.0f} MB)"
                    f" CPU {statistics.median(m.cpu_seconds for m in runs) * 1000 / count:6.2f} ms/inst"
                    f" (system {statistics.median(m.system_seconds for m in runs) * 1000 / count:.2f})"
                    f" {statistics.median(m.switches for m in runs) / count:6.1f} switches/inst"
                    f" load {', '.join(f'{m.load:.1f}' for m in runs)}"
                    # Each run's rate and the cores' speed then: a median of three hides a
                    # run made on cores in their slow phase (run 26).
                    f" runs {', '.join(f'{count / m.seconds:.1f}' for m in runs)} inst/s"
                    f" probe {', '.join(f'{m.probe_us:.0f}' for m in runs)} us"
                    f"{wire_fields(runs, count)}"
                    f"{'' if all(m.stored_ok for m in runs) else '  (INCOMPLETE)'}",
                    flush=True,
                )
                if WHERE:
                    print(where_line(runs, count), flush=True)

    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print_table(sets, receivers, results, parallels)

    yunying = next((r for r in receivers if r.name == "yunying-sqlite"), None)
    if yunying is not None and sets:
        latency = time_to_consult(workdir, yunying.start, sets[0])
        print(f"\nlast instance acknowledged -> consult open, stability delay 2 s: {latency:.2f} s")
    if args.memory_gb and yunying is not None:
        memory_set = generate_memory_set(workdir, args.memory_gb)
        measure = run_once(yunying, memory_set, 1, workdir, warmup)
        print(
            f"\nmemory: {memory_set.label} into yunying-sqlite in {measure.seconds:.1f} s "
            f"({memory_set.total_bytes / measure.seconds / 1e6:.0f} MB/s), peak RSS {measure.peak_kb / 1024:.0f} MB"
            f"{'' if measure.stored_ok else '  (INCOMPLETE)'}"
        )


REFERENCES = ("pynetdicom-fsync", "storescp", "orthanc-sqlite", "orthanc-postgresql")


def print_table(sets: list[DataSet], receivers: list[Receiver], results: dict, parallels: list[int]) -> None:
    def rate(name: str, dataset: DataSet, parallel: int) -> tuple[float, float, float, float, float] | None:
        runs = results.get((name, dataset.name, parallel))
        if not runs:
            return None
        seconds = statistics.median(m.seconds for m in runs)
        return (
            len(dataset.files) / seconds,
            dataset.total_bytes / seconds / 1e6,
            max(m.peak_kb for m in runs) / 1024,
            max(m.peak_process_kb for m in runs) / 1024,
            statistics.median(m.cpu_seconds for m in runs) * 1000 / len(dataset.files),
        )

    print(
        "| set | assocs | receiver | inst/s | MB/s | peak RSS MB (largest process) | CPU ms/inst |"
        " vs pynetdicom+fsync | vs storescp | vs Orthanc SQLite | vs Orthanc PG | vs 1 assoc | probe us (runs) |"
        " wire inst/s | wire vs 1 assoc |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dataset in sets:
        for parallel in parallels:
            references = {ref: rate(ref, dataset, parallel) for ref in REFERENCES}
            for receiver in receivers:
                value = rate(receiver.name, dataset, parallel)
                if value is None:
                    continue
                ratios = []
                for ref in REFERENCES:
                    base = references[ref]
                    ratios.append(f"{value[1] / base[1]:.2f}" if base and receiver.name != ref else "")
                # How fast the cores ran during each run (lower is faster): a cell whose runs
                # fell in the cores' slow phase reads low for that alone (run 26).
                probes = ", ".join(f"{m.probe_us:.0f}" for m in results[(receiver.name, dataset.name, parallel)])
                one = rate(receiver.name, dataset, 1)
                ratios.append(f"{value[1] / one[1]:.2f}" if one and parallel != 1 else "")
                # At the server's side of the wire (wire.py): the clients' start-ups before
                # the first association and their release and exit left out.
                count = len(dataset.files)
                wire = wire_median(results[(receiver.name, dataset.name, parallel)], count)
                one_runs = results.get((receiver.name, dataset.name, 1))
                wire_one = wire_median(one_runs, count) if one_runs else float("nan")
                wire_ratio = f"{wire / wire_one:.2f}" if parallel != 1 and wire_one == wire_one else ""
                print(
                    f"| {dataset.label} | {parallel} | {receiver.name} | {value[0]:.1f} | {value[1]:.1f} | "
                    f"{value[2]:.0f} ({value[3]:.0f}) | {value[4]:.2f} | {' | '.join(ratios)} | {probes} |"
                    f" {wire:.1f} | {wire_ratio} |"
                )


if __name__ == "__main__":
    main()
