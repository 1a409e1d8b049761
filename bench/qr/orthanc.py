"""Orthanc beside the receiver for bench/qr/run.py: its configuration, its start and the
load of the same studies through its REST API.

Orthanc 1.10 (Debian's orthanc, orthanc-postgresql) binds every address, so run.py runs
inside a network namespace of its own (`unshare -n`, loopback only) and reaches
PostgreSQL on its Unix socket. Its index is in PostgreSQL (the PostgreSQL index plugin),
its files on local disk, as ours.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = "/usr/share/orthanc/plugins"
SOCKET_DIR = "/var/run/postgresql"
AE_TITLE = "ORTHANC"


def available() -> bool:
    return Path(ORTHANC).exists() and Path(PLUGINS, "libOrthancPostgreSQLIndex.so").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"Orthanc: nothing listens on {port}")


class Orthanc:
    """One Orthanc process: `http` its REST address, `dicom` its DICOM port."""

    def __init__(self, workdir: Path, database: str, peers: dict[str, tuple[str, int]]) -> None:
        self.workdir = workdir
        self.http = free_port()
        self.dicom = free_port()
        config = {
            "Name": "bench-qr",
            "StorageDirectory": str(workdir / "orthanc-storage"),
            "IndexDirectory": str(workdir / "orthanc-index"),
            "HttpPort": self.http,
            "DicomPort": self.dicom,
            "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "HttpThreadsCount": 16,
            "StorageCompression": False,
            "StableAge": 3600,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            # Its default (Latin-1) would drop the Chinese names from its answers.
            "DefaultEncoding": "Utf8",
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomModalities": {title: [title, host, port] for title, (host, port) in peers.items()},
            "Plugins": [f"{PLUGINS}/libOrthancPostgreSQLIndex.so"],
            "PostgreSQL": {
                "EnableIndex": True,
                "EnableStorage": False,
                "Host": SOCKET_DIR,
                "Port": 5432,
                "Database": database,
                "Username": "postgres",
                "Password": "",
                "Lock": False,
                # The upload's parallel requests each get a connection (the default is one).
                "IndexConnectionsCount": 4,
            },
        }
        path = workdir / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = open(workdir / "orthanc.log", "a")  # noqa: SIM115
        # Orthanc's DICOM side is dcmtk's: without TCP_NODELAY its answers wait on Nagle.
        self.process = subprocess.Popen(
            [ORTHANC, str(path)], stdout=self.log, stderr=self.log, env={**os.environ, "TCP_NODELAY": "1"}
        )
        wait_for(self.http)
        wait_for(self.dicom)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def count_studies(self) -> int:
        import requests

        response = requests.get(f"http://127.0.0.1:{self.http}/statistics", timeout=120)
        response.raise_for_status()
        return int(response.json()["CountStudies"])

    def upload(self, files: Iterable[bytes], total: int, threads: int = 8) -> float:
        """POST each file to /instances from `threads` connections; returns the seconds."""
        import requests

        work: queue.Queue[bytes | None] = queue.Queue(maxsize=threads * 64)
        failures: list[str] = []
        done = [0]
        lock = threading.Lock()
        url = f"http://127.0.0.1:{self.http}/instances"

        def worker() -> None:
            session = requests.Session()
            while True:
                body = work.get()
                if body is None:
                    return
                for _attempt in range(20):
                    response = session.post(url, data=body, timeout=300)
                    # 503: two of its index connections wrote the same rows (PostgreSQL's
                    # serialization failure); Orthanc asks for the request again.
                    if response.status_code != 503:
                        break
                    time.sleep(0.05)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                with lock:
                    done[0] += 1

        workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for thread in workers:
            thread.start()
        began = time.perf_counter()
        last = began
        for body in files:
            work.put(body)
            now = time.perf_counter()
            if now - last > 30:
                last = now
                rate = done[0] / (now - began)
                print(
                    f"  Orthanc: {done[0]} of {total} stored, {rate:.0f}/s, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            if failures:
                break
        for _ in workers:
            work.put(None)
        for thread in workers:
            thread.join()
        if failures:
            raise SystemExit(f"Orthanc refused an upload: {failures[0]}")
        return time.perf_counter() - began


def study_files(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """One small instance (no pixel data) per study row of bench/qido's seed, with the
    keys the C-FIND queries match and return: the same values as in our index."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        CTImageStorage,
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    for row in rows:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = (
            CTImageStorage if row["modalities_in_study"] == "CT" else DigitalXRayImageStorageForPresentation
        )
        # Derived from the study's: a load that is run again stores nothing twice.
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[row["study_uid"]])
        ds.PatientName = row["patient__name"]
        ds.PatientID = row["patient__patient_id"]
        ds.PatientBirthDate = row["patient__birth_date"].strftime("%Y%m%d") if row["patient__birth_date"] else ""
        ds.PatientSex = row["patient__sex"]
        ds.StudyInstanceUID = row["study_uid"]
        ds.StudyDate = row["study_date"].strftime("%Y%m%d") if row["study_date"] else ""
        ds.StudyTime = row["study_time"].strftime("%H%M%S") if row["study_time"] else ""
        ds.AccessionNumber = row["accession_number"]
        ds.StudyID = row["study_id"]
        ds.StudyDescription = row["description"]
        ds.SeriesInstanceUID = row["series_uid"]
        ds.Modality = row["modalities_in_study"]
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()
