#!/usr/bin/env python
"""Soak test of the DICOM receiver: many small instances over many associations.

Starts `manage.py dicomnode` on PostgreSQL (a database of its own, `yunying_soak`, dropped
and created again), pushes `--instances` generated CT instances (128 x 128 16-bit, about
33 KB each) with dcmtk storescu, `--per-association` instances per association (one study
each), `--parallel` associations at a time, and samples the receiver's resident memory
every `--sample-seconds`. The receiver runs as in production: its own stability timer
opens a consult for every study that stops receiving (tasks run in-process, no broker).

It prints the memory over time (start, after each quarter of the instances, end, peak),
the slope of a least-squares line through the samples after the first tenth (MB per
10,000 instances), the count of failed stores (every C-STORE response that is not
Success, and every instance never answered) and the index's count of instances, and
writes every sample to `samples.csv` in the work directory. With --heap-probe the
receiver runs under `heap_probe.py`, which reports its Python heap (objects tracked by the
garbage collector, pymalloc's blocks) when idle, after 10 and 50 % and at the end.

    .venv/bin/python bench/soak/run.py --instances 10000
    .venv/bin/python bench/soak/run.py --instances 100000 --parallel 3

Exits non-zero when a store failed or the index does not hold every instance once.
The files are generated per association and deleted once sent, and the image store is
removed at the end (unless --keep), so the disk needs only the run's image store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
AE_TITLE = "CLOUDPACS"
CALLING = "XUANWO_CT"
MAX_PDU = 131072
# UIDs of one fixed length (each component led by a 1: no leading zeros), so that a
# template file's UIDs are replaced byte for byte.
UID_ROOT = "1.2.826.0.1.3680043.8.498.7"

SEED = """
from facilities.models import ExamKind, Facility, Modality
f = Facility.objects.create(code="XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo",
    kind=Facility.Kind.TOWNSHIP_CENTRE, level=Facility.Level.FIRST)
Modality.objects.create(facility=f, kind=ExamKind.CT, ae_title="XUANWO_CT")
"""


def study_uid(run: int, batch: int) -> str:
    return f"{UID_ROOT}.1.1{run:06d}.1{batch:08d}"


def series_uid(run: int, batch: int) -> str:
    return f"{UID_ROOT}.2.1{run:06d}.1{batch:08d}"


def instance_uid(run: int, batch: int, number: int) -> str:
    return f"{UID_ROOT}.3.1{run:06d}.1{batch:08d}.1{number:05d}"


def patient_id(batch: int) -> str:
    # A few hundred patients, each with several studies, as a township sees them.
    return f"S{batch % 500:05d}"


def template_bytes() -> bytes:
    """One Part 10 file with the placeholders of batch 0, instance 0."""
    sys.path.insert(0, str(BASE_DIR))
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = instance_uid(0, 0, 0)
    ds.StudyInstanceUID = study_uid(0, 0)
    ds.SeriesInstanceUID = series_uid(0, 0)
    ds.PatientID = patient_id(0)
    ds.PatientName = "Soak^Test=测试"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyDate = "20251101"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "SOAK"
    ds.StudyID = "1"
    ds.StudyDescription = "胸部平扫"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = 128
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = ((np.arange(128 * 128, dtype=np.uint32) * 7) % 4096).astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return bytes(buffer.getvalue())


def write_batch(template: bytes, directory: Path, run: int, batch: int, count: int) -> list[Path]:
    directory.mkdir(parents=True)
    common = (
        template.replace(study_uid(0, 0).encode(), study_uid(run, batch).encode())
        .replace(series_uid(0, 0).encode(), series_uid(run, batch).encode())
        .replace(patient_id(0).encode(), patient_id(batch).encode())
    )
    paths = []
    for number in range(count):
        path = directory / f"{number:05d}.dcm"
        path.write_bytes(common.replace(instance_uid(0, 0, 0).encode(), instance_uid(run, batch, number).encode()))
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def psql(database_url: str, sql: str) -> str:
    result = subprocess.run(["psql", database_url, "-qtAc", sql], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def admin_url(database_url: str) -> str:
    return database_url.rsplit("/", 1)[0] + "/postgres"


def prepare_database(database_url: str, env: dict[str, str]) -> None:
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    psql(admin_url(database_url), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(admin_url(database_url), f"CREATE DATABASE {name}")
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "shell", "-c", SEED], cwd=BASE_DIR, env=env, check=True)


@dataclass
class Sample:
    seconds: float
    rss_kb: int
    answered: int


class Progress:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answered = 0
        self.succeeded = 0
        self.failed = 0
        self.failures: list[str] = []

    def add(self, sent: int, succeeded: int, note: str) -> None:
        with self.lock:
            self.answered += sent
            self.succeeded += succeeded
            if succeeded != sent:
                self.failed += sent - succeeded
                self.failures.append(note)


def push_batch(template: bytes, workdir: Path, run: int, batch: int, count: int, port: int, progress: Progress) -> None:
    directory = workdir / "batches" / f"{batch:08d}"
    try:
        paths = write_batch(template, directory, run, batch, count)
        result = subprocess.run(
            ["storescu", "-v", "-aet", CALLING, "-aec", AE_TITLE, "--max-pdu", str(MAX_PDU), "127.0.0.1", str(port)]
            + [str(path) for path in paths],
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        responses = [
            line
            for line in result.stdout.splitlines() + result.stderr.splitlines()
            if "Received Store Response" in line
        ]
        succeeded = sum(1 for line in responses if "(Success)" in line)
        note = f"batch {batch}: storescu exit {result.returncode}, {succeeded}/{count} Success"
        if succeeded != count:
            note += "\n" + "\n".join((result.stdout + result.stderr).splitlines()[-5:])
        progress.add(count, succeeded, note)
    except Exception as exc:  # the bench goes on and counts the batch as failed
        progress.add(count, 0, f"batch {batch}: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def sampler(pid: int, start: float, progress: Progress, interval: float, stop: threading.Event) -> Iterator[Sample]:
    while True:
        try:
            yield Sample(time.monotonic() - start, rss_kb(pid), progress.answered)
        except FileNotFoundError:
            return
        if stop.wait(interval):
            yield Sample(time.monotonic() - start, rss_kb(pid), progress.answered)
            return


def heap_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def slope_mb_per_10k(samples: list[Sample]) -> float:
    xs = [sample.answered for sample in samples]
    ys = [sample.rss_kb / 1024 for sample in samples]
    if len(samples) < 2 or len(set(xs)) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope * 10_000


def at_fraction(samples: list[Sample], total: int, fraction: float) -> Sample:
    wanted = total * fraction
    return min(samples, key=lambda sample: abs(sample.answered - wanted))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--per-association", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/yunying_soak")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the image store and samples")
    parser.add_argument(
        "--heap-probe",
        action="store_true",
        help="run the receiver under heap_probe.py and report its Python heap at 0, 10 and 50%% and the end",
    )
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        print("storescu (dcmtk) is needed: apt-get install dcmtk", file=sys.stderr)
        return 2

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="yunying-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "STORAGE_ROOT": str(workdir / "storage"),
        "DICOM_AE_TITLE": AE_TITLE,
        "DICOM_MAX_PDU": str(MAX_PDU),
        "STUDY_STABLE_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "CELERY_BROKER_URL": "",
    }
    prepare_database(args.database_url, env)
    port = free_port()
    log = (workdir / "receiver.log").open("w")
    program = [str(Path(__file__).with_name("heap_probe.py"))] if args.heap_probe else ["manage.py"]
    heap = Path(env.setdefault("SOAK_HEAP_PROBE", str(workdir / "heap.txt")))
    heap.unlink(missing_ok=True)
    receiver = subprocess.Popen(
        [PYTHON, *program, "dicomnode", "--host", "127.0.0.1", "--port", str(port)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert receiver.stdout is not None
    line = receiver.stdout.readline()
    if "listening" not in line:
        print(f"the receiver did not start: {line}", file=sys.stderr)
        return 2

    template = template_bytes()
    run = int(time.time()) % 1_000_000
    batches = [
        (batch, min(args.per_association, args.instances - batch * args.per_association))
        for batch in range((args.instances + args.per_association - 1) // args.per_association)
    ]
    progress = Progress()
    stop = threading.Event()
    samples: list[Sample] = []
    start = time.monotonic()
    sampling = threading.Thread(
        target=lambda: samples.extend(sampler(receiver.pid, start, progress, args.sample_seconds, stop)), daemon=True
    )
    sampling.start()
    print(f"pushing {args.instances} instances, {args.per_association} per association, {args.parallel} in parallel")
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    next_report = time.monotonic() + 60
    probes: list[str] = []

    def probe_heap(label: str) -> None:
        if args.heap_probe:
            receiver.send_signal(signal.SIGUSR1)
            probes.append(f"{label} ({progress.answered} sent)")

    probe_heap("idle")
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [
            pool.submit(push_batch, template, workdir, run, batch, count, port, progress) for batch, count in batches
        ]
        for future in futures:
            future.result()
            for fraction in (0.1, 0.5):
                label = f"after {fraction:.0%}"
                if progress.answered >= args.instances * fraction and not any(p.startswith(label) for p in probes):
                    probe_heap(label)
            if time.monotonic() >= next_report:
                next_report += 60
                elapsed = time.monotonic() - start
                print(
                    f"  {elapsed:7.0f} s  {progress.answered:7d} sent  {progress.failed} failed  "
                    f"RSS {rss_kb(receiver.pid) / 1024:.1f} MB  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    elapsed = time.monotonic() - start
    probe_heap("end")
    stop.set()
    sampling.join()
    stored = int(psql(args.database_url, "SELECT count(*) FROM cloudpacs_instance"))
    deadline = time.monotonic() + 60
    while args.heap_probe and time.monotonic() < deadline and len(heap_lines(heap)) < len(probes):
        time.sleep(0.5)
    distinct = int(psql(args.database_url, "SELECT count(DISTINCT sop_instance_uid) FROM cloudpacs_instance"))
    receiver.send_signal(signal.SIGTERM)
    try:
        receiver.wait(timeout=60)
    except subprocess.TimeoutExpired:
        receiver.kill()
    log.close()

    with (workdir / "samples.csv").open("w") as out:
        out.write("seconds,rss_kb,instances_sent\n")
        for sample in samples:
            out.write(f"{sample.seconds:.1f},{sample.rss_kb},{sample.answered}\n")
    late = [sample for sample in samples if sample.answered >= args.instances * 0.1]
    load = os.getloadavg()
    print()
    print(f"instances sent        {progress.answered} in {elapsed:.0f} s ({progress.answered / elapsed:.1f}/s)")
    print(f"failed stores         {progress.failed}")
    print(f"indexed instances     {stored} ({distinct} distinct SOP Instance UIDs)")
    print(f"samples               {len(samples)}, every {args.sample_seconds:g} s")
    print("receiver RSS (MB):")
    print(f"  start (idle)        {samples[0].rss_kb / 1024:.1f}")
    for fraction in (0.25, 0.5, 0.75):
        sample = at_fraction(samples, args.instances, fraction)
        print(f"  after {sample.answered:>7d}       {sample.rss_kb / 1024:.1f}   ({sample.seconds:.0f} s)")
    print(f"  end                 {samples[-1].rss_kb / 1024:.1f}   ({samples[-1].seconds:.0f} s)")
    print(f"  peak                {max(sample.rss_kb for sample in samples) / 1024:.1f}")
    print(f"slope after the first 10%: {slope_mb_per_10k(late):+.2f} MB per 10,000 instances")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (on {os.cpu_count()} CPUs)")
    print(f"samples: {workdir / 'samples.csv'}; receiver log: {workdir / 'receiver.log'}")
    if args.heap_probe:
        print("receiver's Python heap (objects tracked by gc, pymalloc blocks):")
        for label, line in zip(probes, heap_lines(heap), strict=False):
            objects, blocks = line.split()
            print(f"  {label:<24}{int(objects):>10,d}{int(blocks):>12,d}")
    for note in progress.failures[:10]:
        print(note)
    if not args.keep:
        shutil.rmtree(workdir / "storage", ignore_errors=True)
    ok = progress.failed == 0 and stored == distinct == args.instances
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
