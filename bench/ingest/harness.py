"""What the ingest benchmarks (run.py, latency.py) share: the images they send, the
database they seed, and the receiver they start and stop.

Imported by its name: a script's own directory comes first on its import path."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

BASE_DIR = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# The receiver's AE title and the console's that sends to it, which SEED registers.
AE_TITLE = "CLOUDPACS"
CALLING = "XUANWO_CT"
PG_SOCKET_DIR = "/var/run/postgresql"

# One township and its CT console, so that the receiver accepts CALLING.
SEED = """
from facilities.models import ExamKind, Facility, Modality
f = Facility.objects.create(code="XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo",
    kind=Facility.Kind.TOWNSHIP_CENTRE, level=Facility.Level.FIRST)
Modality.objects.create(facility=f, kind=ExamKind.CT, ae_title="XUANWO_CT")
"""


# ---------------------------------------------------------------- images


def random_pixels(rows: int, cols: int, seed: int) -> bytes:
    """12-bit noise in 16-bit words: as large as a real image, and as incompressible."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()


def image(
    sop_class: str,
    modality: str,
    rows: int,
    cols: int,
    *,
    study: str,
    series: str,
    number: int,
    patient_id: str,
    accession: str,
    pixels: bytes,
    institution: str | None = None,
    station: str | None = None,
) -> Any:
    """A monochrome image of one series, Explicit VR Little Endian, ready for save_as."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = patient_id
    ds.PatientName = "Zhang^San=张^三"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate = "20250901"
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    if institution is not None:
        ds.InstitutionName = institution
    if station is not None:
        ds.StationName = station
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write_ct_series(folder: Path, count: int, rows: int, cols: int, *, patient_id: str, accession: str) -> None:
    """`count` CT images of `rows` x `cols` noise, one new study and series, written into
    `folder` (made here) as 0001.dcm, 0002.dcm, ..."""
    from pydicom.uid import CTImageStorage, generate_uid

    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    for number in range(1, count + 1):
        image(
            CTImageStorage,
            "CT",
            rows,
            cols,
            study=study,
            series=series,
            number=number,
            patient_id=patient_id,
            accession=accession,
            pixels=random_pixels(rows, cols, number),
            institution="漩涡镇中心卫生院",
            station="CT01",
        ).save_as(folder / f"{number:04d}.dcm", enforce_file_format=True)


# What the active backends of the current database other than the asking one wait for, a
# row each: "CPU" when not waiting (pg_stat_activity's wait event, PostgreSQL 10 and later).
ACTIVE_WAITS = (
    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity"
    " WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()"
)


def active_waits(cursor: Any) -> list[str]:
    cursor.execute(ACTIVE_WAITS)
    return [row[0] for row in cursor.fetchall()]


# ---------------------------------------------------------------- clients


def console_handlers() -> list[Any]:
    """pynetdicom event handlers for a client that sends message after message on one
    association: its association loop gets dicomnode.reactor's checked pause.

    pynetdicom's own pause handshake has a gap (pynetdicom issues #435 and #875, closed for
    the receiver's loops in dicomnode/reactor.py): when send_c_store() follows another at
    once and the client's loop thread has not run since the first one's answer, the loop
    still says "paused", the second send goes ahead, and the loop may then take that
    send's C-STORE response off the queue ("Received unexpected C-STORE service
    message"). The sender waits out its DIMSE timeout while the receiver, having
    answered, sees nothing more and ends the association after its network timeout
    ("Network timeout reached"): the province replay's stalled associations."""
    from pynetdicom import evt

    if str(BASE_DIR) not in sys.path:
        sys.path.insert(0, str(BASE_DIR))
    from dicomnode import reactor

    def opened(event: Any) -> None:
        reactor.install_requestor(event.assoc)

    return [(evt.EVT_CONN_OPEN, opened)]


class TakenResponses(logging.Handler):
    """Counts, in this process, the responses a pynetdicom client's own association loop
    took from under their senders: pynetdicom logs each as "Received unexpected ...
    service message" (console_handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected" in record.getMessage():
            with self._lock:
                self.count += 1

    @classmethod
    def install(cls) -> TakenResponses:
        handler = cls()
        logging.getLogger("pynetdicom").addHandler(handler)
        return handler


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 300) -> None:
    # Generous: several receiver processes load Django before the port listens, which
    # takes a minute or more on a loaded machine.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def psql(sql: str, database: str = "postgres") -> str:
    out = subprocess.run(
        ["psql", "-h", PG_SOCKET_DIR, "-U", "postgres", "-d", database, "-qtAc", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def pg_url(name: str) -> str:
    return f"postgres://postgres@/{name}?host={PG_SOCKET_DIR}"


def seed_database(repo: Path, env: dict[str, str]) -> None:
    """Migrate the database of `env` (DATABASE_URL) with `repo`'s code, then SEED it."""
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=repo, env=env, check=True)
    subprocess.run([PYTHON, "manage.py", "shell", "-c", SEED], cwd=repo, env=env, check=True)


def start_receiver(
    repo: Path, env: dict[str, str], port: int, stdout: IO[Any] | int, stderr: IO[Any] | int, *options: str
) -> subprocess.Popen:
    """`manage.py dicomnode` of `repo` on 127.0.0.1:`port`, configured by `env`."""
    return subprocess.Popen(
        [PYTHON, "manage.py", "dicomnode", "--host", "127.0.0.1", "--port", str(port), *options],
        cwd=repo,
        env=env,
        stdout=stdout,
        stderr=stderr,
    )
