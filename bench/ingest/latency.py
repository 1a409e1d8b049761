#!/usr/bin/env python
"""C-STORE response latency while studies arrive and the stability sweep runs.

Sends N single-instance studies (a 40 KB CT image each, each its own patient) one
association after another with a pynetdicom client, and times every C-STORE from the
request sent to the response received. The stability delay is short (2 s), so the
sweep claims studies, opens their consults and stores their WADO-RS metadata while
the next studies arrive. Prints p50, p99 and max per configuration:

  sqlite / postgresql   the index
  no broker             `manage.py dicomnode` + `manage.py ticker` (what `manage.py
                        platform` runs without CELERY_BROKER_URL): tasks in-process
  broker                `manage.py dicomnode` + a Celery worker (concurrency 2) on Redis

    .venv/bin/python bench/ingest/latency.py [--studies 1000] [--only sqlite-nobroker] \
        [--redis-url redis://127.0.0.1:6379/3] [--repo PATH]

`--repo` runs another checkout's receiver (to measure before and after a change with the
same client). Everything binds 127.0.0.1; PostgreSQL is reached over its unix socket.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    AE_TITLE,
    BASE_DIR,
    CALLING,
    PG_SOCKET_DIR,
    PYTHON,
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

WARMUP_SECONDS = 10.0
CONFIGS = ["sqlite-nobroker", "sqlite-broker", "postgresql-nobroker", "postgresql-broker"]


def generate(directory: Path, count: int) -> list[Path]:
    from pydicom.uid import CTImageStorage, generate_uid

    marker = directory / f".complete-{count}"
    if not marker.exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        pixels = random_pixels(140, 140, 1)
        for number in range(count):
            ds = image(
                CTImageStorage,
                "CT",
                140,
                140,
                study=generate_uid(),
                series=generate_uid(),
                number=1,
                patient_id=f"LAT{number:05d}",
                accession=f"L{number}",
                pixels=pixels,
            )
            ds.save_as(directory / f"{number:05d}.dcm", enforce_file_format=True)
        marker.touch()
    return sorted(directory.glob("*.dcm"))


@dataclass
class Run:
    config: str
    store_ms: list[float]
    assoc_ms: list[float]
    failed: int
    stored: int
    consults: int
    drain_seconds: float
    wall_seconds: float
    load_start: float
    load_end: float


def environment(repo: Path, rundir: Path, database_url: str, broker: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "STORAGE_ROOT": str(rundir / "storage"),
        "DICOM_AE_TITLE": AE_TITLE,
        "STUDY_STABLE_SECONDS": "2",
        "LOG_LEVEL": "INFO",
        "DEBUG": "false",
        "CELERY_BROKER_URL": broker,
        "PYTHONPATH": str(repo),
    }


def prepare_database(repo: Path, rundir: Path, kind: str) -> str:
    if kind == "sqlite":
        url = f"sqlite:///{rundir / 'db.sqlite3'}"
    else:
        name = "yunying_bench_latency"
        psql(f"DROP DATABASE IF EXISTS {name}")
        psql(f"CREATE DATABASE {name}")
        url = pg_url(name)
    seed_database(repo, environment(repo, rundir, url, ""))
    return url


def count(kind: str, url: str, table: str) -> int:
    if kind == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    return int(psql(f"SELECT count(*) FROM {table}", "yunying_bench_latency"))  # noqa: S608


def client_ae():  # type: ignore[no-untyped-def]
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=CALLING)
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    return ae


def preload(repo: Path, env: dict[str, str], files: list[Path], log) -> None:  # type: ignore[no-untyped-def]
    """`files` stored by a receiver that does not sweep, then stopped: when the measured
    receiver starts, its first sweep finds them all stable at once (up to 200 claimed in
    one go), as after a receiver restart or a sweep that fell behind."""
    port = free_port()
    receiver = start_receiver(repo, env, port, log, log, "--no-sweep-timer")
    try:
        wait_for_port(port, receiver)
        ae = client_ae()
        assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        for path in files:
            assoc.send_c_store(path)
        assoc.release()
    finally:
        stop(receiver)
    time.sleep(2.5)  # STUDY_STABLE_SECONDS


def run(
    config: str, files: list[Path], repo: Path, workdir: Path, redis_url: str, backlog: list[Path], warmup: list[Path]
) -> Run:
    kind, mode = config.split("-")
    rundir = Path(tempfile.mkdtemp(prefix=f"{config}-", dir=workdir))
    url = prepare_database(repo, rundir, kind)
    broker = redis_url if mode == "broker" else ""
    if broker:
        subprocess.run(["redis-cli", "-u", broker, "flushdb"], check=True, capture_output=True)
    env = environment(repo, rundir, url, broker)
    port = free_port()
    log = open(rundir / "processes.log", "w")  # noqa: SIM115
    if backlog:
        preload(repo, env, backlog, log)
    receiver = start_receiver(repo, env, port, log, log)
    if broker:
        helper_argv = [PYTHON, "-m", "celery", "-A", "cloudpacs", "worker", "--loglevel", "WARNING"]
        helper_argv += ["--concurrency", "2"]
    else:
        helper_argv = [PYTHON, "manage.py", "ticker"]
    helper = subprocess.Popen(helper_argv, cwd=repo, env=env, stdout=log, stderr=log)
    store_ms: list[float] = []
    assoc_ms: list[float] = []
    failed = 0
    try:
        wait_for_port(port, receiver)
        ae = client_ae()
        if warmup:
            # Untimed: a receiver (and its sweep process) that has finished starting, not
            # one still importing its code on a busy machine.
            assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
            for path in warmup:
                assoc.send_c_store(path)
            assoc.release()
            time.sleep(WARMUP_SECONDS)
        load_start = os.getloadavg()[0]
        started = time.perf_counter()
        for path in files:
            opened = time.perf_counter()
            assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
            if not assoc.is_established:
                failed += 1
                continue
            sent = time.perf_counter()
            status = assoc.send_c_store(path)
            answered = time.perf_counter()
            assoc.release()
            closed = time.perf_counter()
            if status is None or getattr(status, "Status", None) != 0:
                failed += 1
            else:
                store_ms.append((answered - sent) * 1000)
                assoc_ms.append((closed - opened) * 1000)
            if answered - sent > 1.0:
                print(f"  slow C-STORE: {answered - sent:.2f} s at {time.strftime('%H:%M:%S')}", flush=True)
        wall = time.perf_counter() - started
        drained = time.perf_counter()
        consults = 0
        while time.perf_counter() - drained < 600:
            consults = count(kind, url, "consults_consult")
            if consults >= len(files) + len(backlog) + len(warmup):
                break
            time.sleep(0.5)
        drain = time.perf_counter() - drained
        stored = count(kind, url, "cloudpacs_instance")
        load_end = os.getloadavg()[0]
    finally:
        stop(receiver)
        stop(helper)
        log.close()
    keep = workdir / f"{config}.log"
    shutil.copyfile(rundir / "processes.log", keep)
    shutil.rmtree(rundir, ignore_errors=True)
    return Run(config, store_ms, assoc_ms, failed, stored, consults, drain, wall, load_start, load_end)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--only", action="append", choices=CONFIGS, help="configurations (default all)")
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="studies already stable, unswept, when the receiver starts (its first sweep takes them at once)",
    )
    parser.add_argument(
        "--warmup",
        action="store_true",
        help=f"one untimed study first, then {WARMUP_SECONDS:g} s for the receiver's processes to finish starting",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--repo", type=Path, default=BASE_DIR, help="the checkout whose receiver is measured")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "yunying-bench-latency")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = generate(args.workdir / "studies", args.studies)
    backlog = generate(args.workdir / "backlog", args.backlog) if args.backlog else []
    warmup = generate(args.workdir / "warmup", 1) if args.warmup else []
    configs = args.only or CONFIGS
    if not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
        configs = [c for c in configs if not c.startswith("postgresql")]
    repo = args.repo.resolve()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(
        f"receiver from {repo} at {commit.stdout.strip()}; {len(files)} studies, {len(backlog)} waiting for the sweep"
        f" at the start; {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for config in configs:
        print(f"{config} ...", flush=True)
        result = run(config, files, repo, args.workdir, args.redis_url, backlog, warmup)
        results.append(result)
        print(
            f"  p50 {statistics.median(result.store_ms):.0f} ms, p99 {percentile(result.store_ms, 0.99):.0f} ms, "
            f"max {max(result.store_ms, default=float('nan')):.0f} ms; association max "
            f"{max(result.assoc_ms, default=float('nan')):.0f} ms; failed {result.failed}; stored {result.stored}; "
            f"consults {result.consults} ({result.drain_seconds:.1f} s after the last); {result.wall_seconds:.0f} s; "
            f"load {result.load_start:.1f} -> {result.load_end:.1f}",
            flush=True,
        )
    print()
    print("| index | tasks | C-STORE p50 ms | p99 ms | max ms | association max ms | failed | load start/end |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        kind, mode = r.config.split("-")
        print(
            f"| {kind} | {'Celery worker' if mode == 'broker' else 'in-process'} | "
            f"{statistics.median(r.store_ms):.0f} | {percentile(r.store_ms, 0.99):.0f} | {max(r.store_ms):.0f} | "
            f"{max(r.assoc_ms):.0f} | {r.failed} | {r.load_start:.1f} / {r.load_end:.1f} |"
        )


if __name__ == "__main__":
    main()
