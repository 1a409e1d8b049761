#!/usr/bin/env python
"""A province's day replayed against the platform on this machine.

The day is bench/scale/model.py's: about a thousand townships (--townships), each one of
Hanyin County's eleven in turn, with its CT and DR exams of 2024 and their hours. A share
of its exams (--share, drawn at random across all townships, so the mix and the hours
stay the province's) is replayed at a multiple of real time (--speed) by console
processes, each exam one association from its township's AE title, every image of it
sent back to back. Real headers and real instance counts per exam; the pixel data is
small (64 x 64), except a real-size sample: the first --real-size CT and DR exams of the
replay carry 512 x 512 slices and 3000 x 2500 images.

The platform: --receivers receivers (`manage.py dicomnode`, each with --processes
worker processes, DICOM_RECEIVER_PROCESSES) behind HAProxy on loopback (TCP mode, PROXY
protocol v2, DICOM_PROXY_ADDRESSES=127.0.0.1), PostgreSQL (a database of its own,
dropped at the end), a Celery worker and beat on Redis (--redis-url, flushed before and
after). Before the replay, a burst of small and of real-size CT images goes to the
platform and to the reference, a bare pynetdicom SCP that fsyncs each file
(bench/ingest/bare_scp.py), one after the other in the same run.

It prints sustained instances/s, C-STORE p50/p99, the last instance to the consult on the
worklist (p50/p99), CPU per component, where the bottleneck is, and the machines the full
province would need from those figures.

    .venv/bin/python bench/scale/run.py                       # defaults: 1% of the day at 240x
    .venv/bin/python bench/scale/run.py --share 0.005 --speed 480 --receivers 2 --processes 2

Everything binds 127.0.0.1; PostgreSQL is reached over its unix socket. The files it makes
(well under 1 GB at the defaults) are deleted at the end, with the database.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import multiprocessing
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(BASE_DIR))

from bench.ingest.harness import TakenResponses, console_handlers, free_port, psql, stop, wait_for_port  # noqa: E402
from bench.scale import model  # noqa: E402

PYTHON = sys.executable
AE_TITLE = "CLOUDPACS"
PG_SOCKET_DIR = "/var/run/postgresql"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SMALL_SIZE = 64
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Reference bursts before the replay: small CT images, and real-size ones.
BURST_SMALL = 300
BURST_REAL = 60
BURST_ASSOCIATIONS = 4
# Extrapolation: a component's cores at this utilisation at the busiest half hour.
TARGET_UTILISATION = 0.6
PEAK_WINDOW = 30.0
# Longer than the receiver's own network timeout (120 s), so that it gives up first.
CLIENT_TIMEOUT = 180
SETTLE_SECONDS = 5.0


def township_ae(index: int, kind: str) -> str:
    return f"T{index:04d}_{kind}"


# ---------------------------------------------------------------- the instances


def template(kind: str):  # type: ignore[no-untyped-def]
    """One image's header, with the attributes a township CT or DR console sends (patient,
    study, series, equipment, acquisition, image plane and pixel description, the
    display window, and a private block of the size consoles add)."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if kind == "CT" else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = CT_IMAGE if kind == "CT" else DX_IMAGE
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20250923"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.Modality = "CT" if kind == "CT" else "DX"
    ds.Manufacturer = "UIH" if kind == "CT" else "Mindray"
    ds.ManufacturerModelName = "uCT 528" if kind == "CT" else "DigiEye 760"
    ds.InstitutionName = "某某镇卫生院"
    ds.InstitutionAddress = "陕西省安康市汉阴县某某镇"
    ds.ReferringPhysicianName = "王^医生=王^医生"
    ds.StationName = "TOWNSHIP01"
    ds.StudyDescription = "CT 胸部平扫" if kind == "CT" else "DR 胸部正位"
    ds.SeriesDescription = "5mm 轴位" if kind == "CT" else "胸部 正位"
    ds.OperatorsName = "李^技师=李^技师"
    ds.PatientName = "Zhang^San=张^三"
    ds.PatientBirthDate = "19580312"
    ds.PatientSex = "M"
    ds.PatientAge = "067Y"
    ds.PatientWeight = "62"
    ds.BodyPartExamined = "CHEST"
    ds.DeviceSerialNumber = "30042"
    ds.SoftwareVersions = "R002.1.0.52147"
    ds.ProtocolName = "Chest routine" if kind == "CT" else "Chest PA"
    ds.PatientPosition = "FFS" if kind == "CT" else ""
    ds.StudyID = "1"
    ds.AcquisitionNumber = 1
    ds.KVP = "120"
    if kind == "CT":
        ds.ScanOptions = "HELICAL_CT"
        ds.SliceThickness = "5"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = "350"
        ds.DistanceSourceToDetector = "1030"
        ds.DistanceSourceToPatient = "570"
        ds.GantryDetectorTilt = "0"
        ds.TableHeight = "155"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = "180"
        ds.Exposure = "90"
        ds.FilterType = "BODY FILTER"
        ds.GeneratorPower = "22"
        ds.FocalSpots = "1.0"
        ds.ConvolutionKernel = "B_SOFT_B"
        ds.SpiralPitchFactor = 0.9875
        ds.CTDIvol = 7.8
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = "0"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
    else:
        ds.ExposureTime = "12"
        ds.XRayTubeCurrent = "320"
        ds.Exposure = "4"
        ds.DistanceSourceToDetector = "1800"
        ds.ViewPosition = "PA"
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = ["0.139", "0.139"]
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.WindowCenter = "2048"
        ds.WindowWidth = "4096"
        ds.Laterality = ""
        ds.PatientOrientation = ["L", "F"]
        ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = ["0.683", "0.683"] if kind == "CT" else ["0.139", "0.139"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    # Consoles add a vendor block (reconstruction and dose parameters): a few KB.
    block = ds.private_block(0x0019, "YUNYING BENCH PRIVATE", create=True)
    block.add_new(0x10, "OB", bytes(3000 if kind == "CT" else 2000))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    return ds


def pixels(kind: str, real: bool, number: int) -> tuple[int, int, bytes]:
    import numpy as np

    if not real:
        rows = columns = SMALL_SIZE
    elif kind == "CT":
        rows = columns = 512
    else:
        rows, columns = 3000, 2500
    data = np.random.default_rng(number).integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    return rows, columns, data.tobytes()


def write_study(directory: Path, exam: model.Exam, number: int, real: bool) -> tuple[str, list[Path]]:
    """`exam`'s images as files (the console's disk); its Study Instance UID and the files."""
    from pydicom.uid import generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    ds = template(exam.kind)
    ds.StudyInstanceUID = generate_uid()
    ds.PatientID = f"P{number:06d}"
    ds.AccessionNumber = f"A{number:08d}"
    ds.BodyPartExamined = exam.part
    ds.StationName = township_ae(exam.township, exam.kind)
    rows, columns, data = pixels(exam.kind, real, number)
    ds.Rows, ds.Columns, ds.PixelData = rows, columns, data
    files = []
    for series_number, images in enumerate(exam.series, start=1):
        ds.SeriesInstanceUID = generate_uid()
        ds.SeriesNumber = series_number
        for image in range(1, images + 1):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = image
            if exam.kind == "CT":
                ds.ImagePositionPatient = [-175, -175, -5.0 * image]
            path = directory / f"{series_number}-{image:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return ds.StudyInstanceUID, files


# ---------------------------------------------------------------- processes


SEED = """
from bench.scale.model import TOWNSHIPS
from facilities.models import ExamKind, Facility, Modality
Facility.objects.create(code="COUNTY", name="县人民医院", short_name="县医院", pinyin="County",
    kind=Facility.Kind.COUNTY_HOSPITAL, level=Facility.Level.SECOND)
for index in range({townships}):
    hanyin = TOWNSHIPS[index % len(TOWNSHIPS)]
    f = Facility.objects.create(code=f"T{{index:04d}}", name=f"{{hanyin.name}}{{index}}", short_name=hanyin.short_name,
        pinyin=hanyin.pinyin, kind=Facility.Kind.TOWNSHIP_CENTRE, level=Facility.Level.FIRST)
    Modality.objects.create(facility=f, kind=ExamKind.DR, ae_title=f"T{{index:04d}}_DR")
    if hanyin.has_ct:
        Modality.objects.create(facility=f, kind=ExamKind.CT, ae_title=f"T{{index:04d}}_CT")
"""


@dataclass
class Platform:
    env: dict[str, str]
    database: str
    port: int = 0
    processes: dict[str, list[subprocess.Popen]] = field(default_factory=dict)

    def all(self) -> list[subprocess.Popen]:
        return [process for group in self.processes.values() for process in group]


def start_platform(args: argparse.Namespace, workdir: Path) -> Platform:
    database = args.database
    psql(f"DROP DATABASE IF EXISTS {database}")
    psql(f"CREATE DATABASE {database}")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@/{database}?host={PG_SOCKET_DIR}",
        "CELERY_BROKER_URL": args.redis_url,
        "STORAGE_ROOT": str(workdir / "storage"),
        "DICOM_AE_TITLE": AE_TITLE,
        "DICOM_PROXY_ADDRESSES": "127.0.0.1",
        "DICOM_RECEIVER_PROCESSES": str(args.processes),
        "DICOM_MAX_ASSOCIATIONS": "256",
        "DICOM_MAX_CONNECTIONS_PER_ADDRESS": "256",
        "STUDY_STABLE_SECONDS": str(args.stable_seconds),
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
        "PYTHONPATH": str(BASE_DIR),
    }
    platform = Platform(env, database)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)
    subprocess.run(
        [PYTHON, "manage.py", "shell", "-v0", "-c", SEED.format(townships=args.townships)],
        cwd=BASE_DIR,
        env=env,
        check=True,
    )
    subprocess.run(["redis-cli", "-u", args.redis_url, "flushdb"], check=True, capture_output=True)
    log = open(workdir / "platform.log", "w")  # noqa: SIM115
    ports = []
    # One after the other: each receiver's start clears the shared spool's receiving
    # directory and sweeps orphans, which must not meet another's images in flight.
    for _ in range(args.receivers):
        port = free_port()
        receiver = subprocess.Popen(
            [PYTHON, "manage.py", "dicomnode", "--host", "127.0.0.1", "--port", str(port)],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=log,
        )
        platform.processes.setdefault("receivers", []).append(receiver)
        wait_for_port(port, receiver)
        ports.append(port)
    platform.port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        "global\n  maxconn 4096\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n"
        f"frontend dicom\n  bind 127.0.0.1:{platform.port}\n  default_backend receivers\n"
        "backend receivers\n  balance leastconn\n"
        + "".join(f"  server r{i} 127.0.0.1:{port} send-proxy-v2\n" for i, port in enumerate(ports))
    )
    platform.processes["haproxy"] = [subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=log)]
    celery = [PYTHON, "-m", "celery", "-A", "cloudpacs"]
    platform.processes["celery worker"] = [
        subprocess.Popen(
            [*celery, "worker", "--loglevel", "WARNING", "--concurrency", str(args.worker_concurrency)],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=log,
        )
    ]
    platform.processes["celery beat"] = [
        subprocess.Popen(
            [*celery, "beat", "--loglevel", "WARNING", "--schedule", str(workdir / "celerybeat-schedule")],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=log,
        )
    ]
    wait_for_port(platform.port, platform.processes["haproxy"][0])
    return platform


def stop_platform(platform: Platform, args: argparse.Namespace) -> None:
    for process in platform.all():
        stop(process)
    subprocess.run(["redis-cli", "-u", args.redis_url, "flushdb"], capture_output=True)
    psql(f"DROP DATABASE IF EXISTS {platform.database} WITH (FORCE)")


# ---------------------------------------------------------------- CPU


def tree_pids(root: int) -> list[int]:
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        queue.extend(int(child) for child in children)
    return pids


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime


def machine_busy_ticks() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds of each component over a window, sampled every half second: the
    process trees started here, PostgreSQL's backends serving this database, and the
    replaying consoles. A process first seen inside the window counts from zero (its
    whole life is in the window), one seen at the start from its ticks then."""

    def __init__(self, platform: Platform, clients: list[int], exclude: frozenset[int] = frozenset()) -> None:
        import psycopg

        self.platform = platform
        self.clients = clients
        self.exclude = exclude
        # Connected to another database, so that its own backend is not among those measured.
        self.connection = psycopg.connect(host=PG_SOCKET_DIR, dbname="postgres", user="postgres", autocommit=True)
        self.first: dict[str, dict[int, int]] = {}
        self.last: dict[str, dict[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.machine = (0, 0)
        self.started = 0.0

    def _components(self) -> dict[str, list[int]]:
        components = {
            name: [pid for process in group for pid in tree_pids(process.pid)]
            for name, group in self.platform.processes.items()
        }
        rows = self.connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.platform.database,)
        ).fetchall()
        components["postgresql"] = [pid for (pid,) in rows if pid not in self.exclude]
        components["consoles (client)"] = [pid for root in self.clients for pid in tree_pids(root)]
        return components

    def _sample(self, initial: bool) -> None:
        for name, pids in self._components().items():
            first = self.first.setdefault(name, {})
            last = self.last.setdefault(name, {})
            for pid in pids:
                ticks = cpu_ticks(pid)
                if ticks is None:
                    continue
                if pid not in first:
                    first[pid] = ticks if initial else 0
                last[pid] = ticks

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample(False)

    def __enter__(self) -> CpuMeter:
        self.machine = machine_busy_ticks()
        self.started = time.monotonic()
        self._sample(True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(False)
        self.connection.close()
        busy, total = machine_busy_ticks()
        self.machine_busy = (busy - self.machine[0]) / max(total - self.machine[1], 1)
        self.wall = time.monotonic() - self.started

    def seconds(self) -> dict[str, float]:
        return {
            name: sum(self.last[name][pid] - first for pid, first in pids.items()) / CLK_TCK
            for name, pids in self.first.items()
        }


# ---------------------------------------------------------------- the consoles


@dataclass
class Sent:
    study_uid: str
    kind: str
    real: bool
    lag: float  # seconds the association started after its time
    store_ms: list[float]
    answered: list[float]  # time.time() of each image's Success
    failed: int

    @property
    def acknowledged(self) -> float:
        """When the last image was answered."""
        return self.answered[-1] if self.answered else float("nan")


def send_study(port: int, calling: str, kind: str, files: list[Path], progress) -> tuple[list[float], list[float], int]:  # type: ignore[no-untyped-def]
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context(CT_IMAGE if kind == "CT" else DX_IMAGE, EXPLICIT_LE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = CLIENT_TIMEOUT
    # The checked pause (bench/ingest/harness.console_handlers): with pynetdicom's own, a
    # loaded client could take a C-STORE response from under its sender.
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE, evt_handlers=console_handlers())
    if not assoc.is_established:
        return [], [], len(files)
    store_ms: list[float] = []
    answered_at: list[float] = []
    failed = 0
    try:
        for done, path in enumerate(files):
            if not assoc.is_established:
                # Aborted (a timeout on either side): the rest of the study is not sent.
                failed += len(files) - done
                break
            sent = time.perf_counter()
            status = assoc.send_c_store(path)
            answered = time.perf_counter()
            if status is None or getattr(status, "Status", None) != 0:
                failed += 1
            else:
                store_ms.append((answered - sent) * 1000)
                answered_at.append(time.time())
            with progress.get_lock():
                progress.value += 1
    finally:
        assoc.release()
    return store_ms, answered_at, failed


def console_process(jobs: list[tuple], port: int, origin: float, speed: float, progress, results) -> None:  # type: ignore[no-untyped-def]
    """One console process: each job's association at its time, in threads of its own."""
    taken = TakenResponses.install()

    def run(job: tuple) -> Sent:
        at, calling, kind, real, study_uid, files = job
        lag = time.time() - (origin + at / speed)
        try:
            store_ms, answered, failed = send_study(port, calling, kind, files, progress)
        except Exception as error:  # a console that fails counts its study as lost
            print(f"console: {kind} study {study_uid}: {error!r}", file=sys.stderr)
            return Sent(study_uid, kind, real, lag, [], [], len(files))
        return Sent(study_uid, kind, real, lag, store_ms, answered, failed)

    with ThreadPoolExecutor(max_workers=128) as pool:
        futures = []
        for job in jobs:
            delay = origin + job[0] / speed - time.time()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(run, job))
        results.put([future.result() for future in futures])
    if taken.count:
        print(f"console: {taken.count} C-STORE responses taken by pynetdicom's own loop", file=sys.stderr)


# ---------------------------------------------------------------- consults


class ConsultWatch:
    """When each study's consult appears (the worklist is the open consults): the new
    rows are read every quarter second."""

    def __init__(self, database: str) -> None:
        import psycopg

        self.connection = psycopg.connect(host=PG_SOCKET_DIR, dbname=database, user="postgres", autocommit=True)
        self.seen: dict[str, float] = {}
        self.last_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poll(self) -> None:
        rows = self.connection.execute(
            "SELECT c.id, s.study_uid FROM consults_consult c JOIN cloudpacs_study s ON s.id = c.study_id"
            " WHERE c.id > %s ORDER BY c.id",
            (self.last_id,),
        ).fetchall()
        now = time.time()
        for consult_id, study_uid in rows:
            self.seen.setdefault(study_uid, now)
            self.last_id = max(self.last_id, consult_id)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.poll()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.connection.close()


# ---------------------------------------------------------------- figures


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def burst(port: int, files: list[Path], kind: str) -> float:
    """Instances/s of `files` sent over BURST_ASSOCIATIONS associations at once."""
    groups = [files[i::BURST_ASSOCIATIONS] for i in range(BURST_ASSOCIATIONS)]
    counter = multiprocessing.Value("l", 0)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=BURST_ASSOCIATIONS) as pool:
        outcomes = list(pool.map(lambda group: send_study(port, township_ae(0, kind), kind, group, counter), groups))
    seconds = time.perf_counter() - started
    lost = sum(failed for _, _, failed in outcomes)
    if lost:
        raise RuntimeError(f"{lost} of the burst's {len(files)} images refused or lost")
    return len(files) / seconds


class Bar:
    WIDTH = 30

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = time.monotonic()

    def draw(self, done: int, note: str) -> None:
        share = done / self.total if self.total else 1.0
        filled = int(self.WIDTH * min(share, 1.0))
        elapsed = time.monotonic() - self.started
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} {share:4.0%}"
            f" {done / max(elapsed, 1e-6):6.1f} inst/s {elapsed:5.0f} s {note}   "
        )
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def clock(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


# ---------------------------------------------------------------- main


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--townships", type=int, default=1000, help="townships in the province (default 1000)")
    parser.add_argument(
        "--date", type=date.fromisoformat, default=date(2025, 9, 23), help="the day (an ordinary Tuesday)"
    )
    parser.add_argument("--share", type=float, default=0.01, help="share of the day's exams replayed (default 0.01)")
    parser.add_argument("--speed", type=float, default=240.0, help="multiple of real time (default 240)")
    parser.add_argument("--real-size", type=int, default=1, help="CT and DR exams each sent at real size (default 1)")
    parser.add_argument("--receivers", type=int, default=2, help="receivers behind HAProxy (default 2)")
    parser.add_argument("--processes", type=int, default=2, help="DICOM_RECEIVER_PROCESSES of each (default 2)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument("--consoles", type=int, default=2, help="client processes replaying the consoles (default 2)")
    parser.add_argument("--stable-seconds", type=float, default=5.0, help="STUDY_STABLE_SECONDS (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database", default="yunying_bench_scale")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files go (default a new temporary dir)")
    args = parser.parse_args(argv)
    problems = []
    if args.townships < 1:
        problems.append("--townships must be at least 1")
    if not 0 < args.share <= 1:
        problems.append("--share must be in (0, 1]")
    if args.speed <= 0:
        problems.append("--speed must be positive")
    for name in ("receivers", "processes", "worker_concurrency", "consoles"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if args.real_size < 0:
        problems.append("--real-size must be 0 or more")
    if problems:
        parser.error("; ".join(problems))
    return args


def replay_sample(args: argparse.Namespace) -> tuple[list[model.Exam], list[model.Exam]]:
    """The province's day and the exams of it that are replayed."""
    day = model.province_day(args.townships, args.date, args.seed)
    rng = random.Random(args.seed + 1)
    return day, [exam for exam in day if rng.random() < args.share]


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    for tool in ("haproxy", "psql", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    if not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
        sys.exit(f"no PostgreSQL at {PG_SOCKET_DIR}")
    day, sample = replay_sample(args)
    if not sample:
        sys.exit("the share replays no exam: raise --share")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="yunying-bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, workdir, True)

    kinds = {kind: [exam for exam in day if exam.kind == kind] for kind in ("CT", "DR")}
    print(
        f"{args.date}: a province of {args.townships} townships, {len(day)} exams (CT {len(kinds['CT'])},"
        f" DR {len(kinds['DR'])}), {sum(e.instances for e in day):,} images, {sum(e.real_bytes for e in day) / 1e9:.0f}"
        f" GB at real size; busiest half hour {model.busiest_rate(day):.1f} images/s"
    )
    origin_at = sample[0].at
    duration = (sample[-1].at - origin_at) / args.speed
    instances = sum(exam.instances for exam in sample)
    print(
        f"replaying {len(sample)} exams ({args.share:.1%}), {instances:,} images, {clock(sample[0].at)}-"
        f"{clock(sample[-1].at)} at {args.speed:g}x: {duration / 60:.1f} min; offered in the busiest half hour"
        f" {model.busiest_rate(sample) * args.speed:.1f} images/s"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; files in {workdir}", flush=True)

    # The consoles' disks: every image of the replay, written before anything is timed.
    real_left = {"CT": args.real_size, "DR": args.real_size}
    jobs: list[tuple] = []
    real_bytes = 0
    generated = Bar(instances)
    done = 0
    for number, exam in enumerate(sample):
        real = real_left[exam.kind] > 0
        real_left[exam.kind] -= real
        study_uid, files = write_study(workdir / "consoles" / f"{number:05d}", exam, number, real)
        real_bytes += sum(path.stat().st_size for path in files) if real else 0
        jobs.append((exam.at - origin_at, township_ae(exam.township, exam.kind), exam.kind, real, study_uid, files))
        done += exam.instances
        generated.draw(done, "writing the consoles' files")
    generated.close()
    small_burst = write_study(
        workdir / "burst-small", model.Exam(0, 0, "CT", "CHEST", "routine", (BURST_SMALL,)), 900001, False
    )[1]
    real_burst = write_study(
        workdir / "burst-real", model.Exam(0, 0, "CT", "CHEST", "routine", (BURST_REAL,)), 900002, True
    )[1]
    header = small_burst[0].stat().st_size - SMALL_SIZE * SMALL_SIZE * 2
    print(f"real-size sample {real_bytes / 1e6:.0f} MB; a CT header is {header:,} bytes", flush=True)

    platform = start_platform(args, workdir)
    bare_port = free_port()
    bare_args = ["--port", str(bare_port), "--out", str(workdir / "bare")]
    bare = subprocess.Popen(
        [PYTHON, str(BASE_DIR / "bench" / "ingest" / "bare_scp.py"), "--fsync", "--aet", AE_TITLE, *bare_args],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "bare.log", "w"),  # noqa: SIM115
    )
    try:
        wait_for_port(bare_port, bare)
        report(args, workdir, platform, bare_port, jobs, origin_at, small_burst, real_burst, day)
    finally:
        stop(bare)
        stop_platform(platform, args)


def report(
    args: argparse.Namespace,
    workdir: Path,
    platform: Platform,
    bare_port: int,
    jobs: list[tuple],
    origin_at: float,
    small_burst: list[Path],
    real_burst: list[Path],
    day: list[model.Exam],
) -> None:
    # A warm platform: one small study first, untimed, and its consult.
    warm = write_study(workdir / "warm", model.Exam(0, 0, "DR", "CHEST", "routine", (1,)), 900000, False)[1]
    send_study(platform.port, township_ae(0, "DR"), "DR", warm, multiprocessing.Value("l", 0))
    time.sleep(args.stable_seconds + 3)

    # The references, in the same run: the platform and a bare pynetdicom SCP.
    print("reference bursts (4 associations): small CT, then real-size CT ...", flush=True)
    with CpuMeter(platform, []) as small_cpu:
        platform_small = burst(platform.port, small_burst, "CT")
    with CpuMeter(platform, []) as real_cpu:
        platform_real = burst(platform.port, real_burst, "CT")
    try:
        bare_small = burst(bare_port, small_burst, "CT")
        bare_real = burst(bare_port, real_burst, "CT")
    except RuntimeError as error:
        # The reference is missing, not the replay: say so and go on.
        print(f"the bare pynetdicom reference failed ({error}); its ratios are not given", flush=True)
        bare_small = bare_real = float("nan")
    time.sleep(args.stable_seconds + 3)

    size_query = f"SELECT pg_database_size('{platform.database}')"
    size_before = int(psql(size_query))
    watch = ConsultWatch(platform.database)
    watch.poll()
    watch.start()
    load_start = os.getloadavg()[0]
    total = sum(len(job[5]) for job in jobs)
    progress = multiprocessing.Value("l", 0)
    results: multiprocessing.Queue = multiprocessing.Queue()
    origin = time.time() + 1.0
    consoles = [
        multiprocessing.Process(
            target=console_process,
            daemon=True,
            args=(jobs[i :: args.consoles], platform.port, origin, args.speed, progress, results),
        )
        for i in range(args.consoles)
    ]
    for console in consoles:
        console.start()
    bar = Bar(total)
    sent: list[Sent] = []
    clients = [console.pid for console in consoles if console.pid is not None]
    with CpuMeter(platform, clients, frozenset({watch.connection.info.backend_pid})) as replay_cpu:
        started = time.monotonic()
        while len(sent) < len(jobs):
            with contextlib.suppress(queue.Empty):
                sent += results.get(timeout=0.5)
            province_time = origin_at + max(time.time() - origin, 0) * args.speed
            bar.draw(progress.value, f"province time {clock(min(province_time, 86399))}")
            if all(not console.is_alive() for console in consoles) and results.empty() and len(sent) < len(jobs):
                raise RuntimeError("a console process died")
        replay_seconds = time.monotonic() - started
        bar.close()
        # The last consults: the stability delay and the sweep after the last image.
        deadline = time.monotonic() + 120 + args.stable_seconds
        while time.monotonic() < deadline and any(s.study_uid not in watch.seen for s in sent if s.answered):
            time.sleep(0.25)
        # The sweep stores the last studies' WADO-RS metadata after opening their consults.
        time.sleep(SETTLE_SECONDS)
    for console in consoles:
        console.join()
    watch.stop()
    load_end = os.getloadavg()[0]
    index_bytes = int(psql(size_query)) - size_before

    store = [ms for s in sent if not s.real for ms in s.store_ms]
    real_ct = [ms for s in sent if s.real and s.kind == "CT" for ms in s.store_ms]
    real_dr = [ms for s in sent if s.real and s.kind == "DR" for ms in s.store_ms]
    to_consult = [watch.seen[s.study_uid] - s.acknowledged for s in sent if s.study_uid in watch.seen and s.answered]
    missing = sum(1 for s in sent if s.answered and s.study_uid not in watch.seen)
    failed = sum(s.failed for s in sent)
    for s in sent:
        if s.failed:
            print(
                f"refused or lost: {s.failed} of {s.failed + len(s.store_ms)} images of a"
                f" {'real-size ' if s.real else ''}{s.kind} study ({s.study_uid})"
            )
    lags = [s.lag for s in sent]
    acknowledged = sum(len(s.store_ms) for s in sent)
    answered = sorted(at for s in sent for at in s.answered)
    span = max(answered[-1] - origin, 1e-6) if answered else 1e-6
    # The best rate the platform held for half a minute (the offered rate, where it kept up).
    best, first = 0, 0
    for last, at in enumerate(answered):
        while answered[first] < at - PEAK_WINDOW:
            first += 1
        best = max(best, last - first + 1)

    print()
    print(f"load average {load_start:.1f} at the start, {load_end:.1f} at the end, on {os.cpu_count()} CPUs")
    print(
        f"replay: {acknowledged:,} images of {len(sent)} exams in {replay_seconds:.0f} s, {failed} refused;"
        f" sustained {acknowledged / span:.1f} instances/s over the replay, {best / PEAK_WINDOW:.1f} over its"
        f" busiest {PEAK_WINDOW:.0f} s"
    )
    print(
        f"associations started late (the consoles waiting on the platform): p50 {percentile(lags, 0.5):.1f} s,"
        f" p99 {percentile(lags, 0.99):.1f} s, max {max(lags):.1f} s"
    )
    print(
        f"C-STORE, small pixel data: p50 {percentile(store, 0.5):.0f} ms, p99 {percentile(store, 0.99):.0f} ms,"
        f" max {max(store, default=float('nan')):.0f} ms ({len(store):,})"
    )
    if real_ct:
        print(
            f"C-STORE, real-size CT (0.5 MB): p50 {percentile(real_ct, 0.5):.0f} ms,"
            f" p99 {percentile(real_ct, 0.99):.0f} ms ({len(real_ct)})"
        )
    if real_dr:
        print(
            f"C-STORE, real-size DR (15 MB): p50 {percentile(real_dr, 0.5):.0f} ms,"
            f" max {max(real_dr):.0f} ms ({len(real_dr)})"
        )
    print(
        f"last image -> consult on the worklist: p50 {percentile(to_consult, 0.5):.1f} s, p99"
        f" {percentile(to_consult, 0.99):.1f} s, max {max(to_consult, default=float('nan')):.1f} s"
        f" (the stability delay {args.stable_seconds:g} s included; polled every 0.25 s)"
        + (f"; {missing} exams without a consult after 2 minutes" if missing else "")
    )
    print(
        f"index: the database grew {index_bytes / 1e6:.1f} MB, {index_bytes / max(acknowledged, 1):,.0f} bytes per"
        " image (instance rows, their indexes, the studies' WADO-RS metadata, consults, audit)"
    )
    print(
        f"reference bursts: small CT {platform_small:.1f} instances/s against bare pynetdicom+fsync {bare_small:.1f}"
        f" ({platform_small / bare_small:.2f}); real-size CT {platform_real:.1f} against {bare_real:.1f}"
        f" ({platform_real / bare_real:.2f})"
    )

    cpu = replay_cpu.seconds()
    ours = sum(cpu.values())
    machine = replay_cpu.machine_busy * (os.cpu_count() or 1) * replay_cpu.wall
    print()
    print(
        f"CPU during the replay ({replay_cpu.wall:.0f} s; the machine's {os.cpu_count()} cores were"
        f" {replay_cpu.machine_busy:.0%} busy, {max(machine - ours, 0):.0f} s of it other sessions'):"
    )
    print("| component | CPU s | cores | ms per image | share of ours |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        print(
            f"| {name} | {seconds:.1f} | {seconds / replay_cpu.wall:.2f} |"
            f" {seconds * 1000 / max(acknowledged, 1):.2f} | {seconds / max(ours, 1e-9):.0%} |"
        )
    platform_cpu = {name: seconds for name, seconds in cpu.items() if name != "consoles (client)"}
    heaviest = max(platform_cpu, key=lambda name: platform_cpu[name])
    small_ms = {n: s * 1000 / BURST_SMALL for n, s in small_cpu.seconds().items()}
    real_ms = {n: s * 1000 / BURST_REAL for n, s in real_cpu.seconds().items()}

    print()
    # Behind: the last image answered well after the schedule's last exam began, or consults late.
    late = (answered[-1] - origin if answered else 0.0) - jobs[-1][0] / args.speed
    behind = late > max(30.0, 0.1 * jobs[-1][0] / args.speed) or percentile(to_consult, 0.99) > args.stable_seconds + 30
    if replay_cpu.machine_busy > 0.9:
        where = (
            f"the machine's CPU ({replay_cpu.machine_busy:.0%} busy); of the platform's share the {heaviest}"
            f" take the most, {platform_cpu[heaviest] * 1000 / max(acknowledged, 1):.1f} ms of CPU per image"
        )
    else:
        where = f"not the machine's CPU ({replay_cpu.machine_busy:.0%} busy): the {heaviest} take the most CPU"
    print(
        f"bottleneck: {where}; the platform {'fell behind' if behind else 'kept up with'} the offered rate"
        f" (the last image answered {late:.0f} s after the last exam began, {jobs[-1][0] / args.speed:.0f} s into"
        f" the replay; consults p99 {percentile(to_consult, 0.99):.1f} s)."
    )

    # On paper: the whole province at real time, from the CPU per image measured here.
    per_image = {name: seconds * 1000 / max(acknowledged, 1) for name, seconds in platform_cpu.items()}
    real_factor = real_ms.get("receivers", 0) / max(small_ms.get("receivers", 0), 1e-9)
    peak = model.busiest_rate(day)
    yearly = model.expected_per_year(args.townships)
    ct_bytes = model.mean_images("CT") * model.CT_IMAGE_BYTES
    dr_bytes = model.mean_images("DR") * model.DR_IMAGE_BYTES
    day_bytes = sum(exam.real_bytes for exam in day)
    peak_bytes = peak * day_bytes / max(sum(exam.instances for exam in day), 1)
    print()
    print(
        f"the whole province on paper ({args.townships} townships, busiest half hour {peak:.1f} images/s,"
        f" {peak_bytes * 8 / 1e6:.0f} Mbit/s of images; a real-size CT image costs the receivers"
        f" {real_factor:.1f}x a small one's CPU, {real_ms.get('receivers', 0):.1f} ms):"
    )
    print("| component | ms CPU per image (real size) | cores at the busiest half hour | at 60% |")
    print("|---|---:|---:|---:|")
    for name in sorted(per_image, key=lambda n: -per_image[n]):
        ms = per_image[name] * (real_factor if name == "receivers" else 1.0)
        cores = peak * ms / 1000
        print(f"| {name} | {ms:.1f} | {cores:.2f} | {cores / TARGET_UTILISATION:.1f} |")
    rows_a_year = yearly["CT"] * model.mean_images("CT") + yearly["DR"] * model.mean_images("DR")
    print(
        f"images a year: CT {yearly['CT']:,.0f} exams x {model.mean_images('CT'):.0f} images x 0.5 MB ="
        f" {yearly['CT'] * ct_bytes / 1e12:.0f} TB, DR {yearly['DR']:,.0f} exams x {model.mean_images('DR'):.2f}"
        f" x 15 MB = {yearly['DR'] * dr_bytes / 1e12:.0f} TB; index rows a year"
        f" {rows_a_year:,.0f} instances, {rows_a_year * index_bytes / max(acknowledged, 1) / 1e9:,.0f} GB of index"
    )
    # The receiver's own account of the associations that did not end in a release.
    ended = psql(
        "SELECT calling_ae_title, outcome, reason, started_at, ended_at, instances_stored, instances_failed"
        " FROM dicomnode_associationlog WHERE outcome <> 'released' ORDER BY started_at LIMIT 10",
        platform.database,
    )
    if ended:
        print(
            "associations not released, as the receiver logged them (AE, outcome, reason, start, end, stored, failed):"
        )
        print(ended)
    errors = [line for line in (workdir / "platform.log").read_text().splitlines() if " ERROR " in line]
    if errors:
        print(f"the platform logged {len(errors)} errors, the first ones:")
        print("\n".join(errors[:10]))
    print(f"the files ({workdir}) and the database {platform.database} are removed now.")


if __name__ == "__main__":
    main()
