"""Several receiver processes on one port (DICOM_RECEIVER_PROCESSES, dicomnode.processes):
`manage.py dicomnode` started as the platform starts it, on the test database, with its
worker processes; the front door's limits hold for all of them together, and a worker
killed in the middle of a push loses nothing it acknowledged."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from cloudpacs.models import Instance
from cloudpacs.storage import path_for
from dicomnode.models import AssociationLog
from dicomnode.queryretrieve import OPENED
from tests.factories import make_dataset, make_facility, make_modality

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url() -> str:
    db = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class Receiver:
    process: subprocess.Popen[str]
    address: tuple[str, int]
    log: Path

    def workers(self) -> list[int]:
        """The pids of the worker processes alive now."""
        found = []
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with open(f"/proc/{self.process.pid}/task/{task}/children") as children:
                for pid in children.read().split():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                            if b"--worker" in cmdline.read():
                                found.append(int(pid))
                    except FileNotFoundError:
                        continue
        return found

    def wait_for_workers(self, count: int, ready_lines: int | None = None, seconds: float = 90) -> list[int]:
        """The worker pids once `count` are alive and the log has `ready_lines` (default
        `count`) "ready" lines: a worker says it is ready before it is handed anything."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) == count and self.log.read_text().count(") ready") >= (ready_lines or count):
                return pids
            time.sleep(0.2)
        raise AssertionError(f"{count} workers did not come up: {self.log.read_text()[-2000:]}")


@pytest.fixture
def multi_receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(processes: int | None = 2, **env: str) -> Receiver:
        """`processes` None: DICOM_RECEIVER_PROCESSES unset, the default."""
        log = tmp_path / f"receiver-{len(started)}.log"
        inherited = {name: value for name, value in os.environ.items() if name != "DICOM_RECEIVER_PROCESSES"}
        process = subprocess.Popen(
            [sys.executable, "manage.py", "dicomnode", "--host", "127.0.0.1", "--port", "0", "--no-sweep-timer"],
            cwd=BASE_DIR,
            env={
                **inherited,
                "DATABASE_URL": database_url(),
                "STORAGE_ROOT": str(settings.STORAGE_ROOT),
                "DICOM_AE_TITLE": "CLOUDPACS",
                **({} if processes is None else {"DICOM_RECEIVER_PROCESSES": str(processes)}),
                "CELERY_BROKER_URL": "",
                "LOG_LEVEL": "INFO",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on ([\d.]+):(\d+)", line)
        assert match, f"{line!r} {log.read_text()[-2000:]}"
        receiver = Receiver(process, (match.group(1), int(match.group(2))), log)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.process.send_signal(signal.SIGTERM)
        try:
            receiver.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            receiver.process.kill()
            receiver.process.wait()


def console(calling: str) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def associate(address: tuple[str, int], calling: str):  # type: ignore[no-untyped-def]
    """An association of `console(calling)` with the receiver's checked pause on its own
    loop (dicomnode.queryretrieve.OPENED): with pynetdicom's, a loaded client sending
    C-STORE after C-STORE can take a response from under itself and wait out its DIMSE
    timeout (docs/benchmarks-scale.md, "One lost association")."""
    return console(calling).associate(*address, ae_title="CLOUDPACS", evt_handlers=OPENED)


def push(address: tuple[str, int], calling: str, datasets: list) -> list[int]:
    assoc = associate(address, calling)
    assert assoc.is_established, f"{calling} was not accepted"
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def dataset_digest(path: Path) -> str:
    """SHA-256 of a stored Part 10 file's dataset (what Instance.sha256 records)."""
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    return hashlib.sha256(data[144 + group_length :]).hexdigest()


def test_eleven_townships_push_at_once_across_processes(multi_receiver):
    townships = [make_modality(make_facility(f"TOWN{n:02d}")) for n in range(11)]
    receiver = multi_receiver(processes=3)
    receiver.wait_for_workers(3)
    studies = {
        modality.ae_title: [
            make_dataset(study_uid=study, series_uid=series, patient_id=f"{modality.ae_title}-P", instance_number=n)
            for n in range(1, 7)
            for study, series in [(f"1.2.826.0.1.3680043.10.1.{i}", f"1.2.826.0.1.3680043.10.2.{i}")]
        ]
        for i, modality in enumerate(townships)
    }
    results: dict[str, list[int]] = {}
    barrier = threading.Barrier(len(townships))

    def send(calling: str) -> None:
        barrier.wait()
        results[calling] = push(receiver.address, calling, studies[calling])

    threads = [threading.Thread(target=send, args=(modality.ae_title,)) for modality in townships]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert {calling: set(statuses) for calling, statuses in results.items()} == {
        modality.ae_title: {0x0000} for modality in townships
    }
    assert Instance.objects.count() == 66
    for modality in townships:
        assert Instance.objects.filter(series__study__facility=modality.facility).count() == 6
    rows = AssociationLog.objects.filter(outcome=AssociationLog.Outcome.RELEASED)
    deadline = time.monotonic() + 10
    while rows.count() < 11 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(rows.values_list("instances_stored", flat=True)) == [6] * 11
    # Served by more than one process: the accepted lines name their worker.
    workers = set(re.findall(r"association accepted: .*, worker (\d+)", receiver.log.read_text()))
    assert len(workers) >= 2, receiver.log.read_text()[-3000:]


def test_the_receiver_serves_from_one_process_per_core_by_default(multi_receiver, ct_modality):
    """One process serves its associations under one interpreter lock: by default the
    receiver starts a worker per core it may run on (one process of its own on a single
    core), and four associations at once are spread over them."""
    cores = len(os.sched_getaffinity(0))
    receiver = multi_receiver(processes=None)
    if cores == 1:
        time.sleep(1)
        assert receiver.workers() == []
        return
    receiver.wait_for_workers(cores)
    study, one_series = "1.2.826.0.1.3680043.10.1.99", "1.2.826.0.1.3680043.10.2.99"
    series = [make_dataset(study_uid=study, series_uid=one_series, instance_number=n) for n in range(1, 9)]
    statuses: list[int] = []
    held = [associate(receiver.address, ct_modality.ae_title) for _ in range(4)]
    try:
        assert all(assoc.is_established for assoc in held)
        for number, ds in enumerate(series):
            statuses.append(held[number % 4].send_c_store(ds).Status)
    finally:
        for assoc in held:
            assoc.release()
    assert statuses == [0x0000] * 8
    assert Instance.objects.filter(series__series_uid=one_series).count() == 8
    # The four held at once, each handed to the worker holding the fewest: 2 + 2 on two cores.
    served = Counter(re.findall(r"association accepted: .*, worker (\d+)", receiver.log.read_text()))
    assert sum(served.values()) == 4 and len(served) == min(cores, 4), receiver.log.read_text()[-3000:]
    assert max(served.values()) - min(served.values()) <= 1, served


def test_the_association_limit_holds_for_all_processes_together(multi_receiver, ct_modality):
    receiver = multi_receiver(processes=2, DICOM_MAX_ASSOCIATIONS="2")
    receiver.wait_for_workers(2)
    held = [console(ct_modality.ae_title).associate(*receiver.address, ae_title="CLOUDPACS") for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        third = console(ct_modality.ae_title).associate(*receiver.address, ae_title="CLOUDPACS")
        assert third.is_rejected
        rejection = third.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        held[0].release()
    # The place given back by one process is taken by the next association, in either.
    deadline = time.monotonic() + 10
    while True:
        assoc = console(ct_modality.ae_title).associate(*receiver.address, ae_title="CLOUDPACS")
        if assoc.is_established or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    held[1].release()


def test_the_per_address_limit_holds_for_all_processes_together(multi_receiver, ct_modality):
    receiver = multi_receiver(processes=2, DICOM_MAX_CONNECTIONS_PER_ADDRESS="3", DICOM_ASSOCIATE_TIMEOUT="20")
    receiver.wait_for_workers(2)
    idle = [socket.create_connection(receiver.address, timeout=5) for _ in range(3)]
    try:
        time.sleep(0.5)  # the parent has handed them over, to both workers
        refused = console(ct_modality.ae_title).associate(*receiver.address, ae_title="CLOUDPACS")
        assert not refused.is_established
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while True:
        assoc = console(ct_modality.ae_title).associate(*receiver.address, ae_title="CLOUDPACS")
        if assoc.is_established or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert assoc.is_established
    assoc.release()
    assert "connections from this address already, the limit is 3" in receiver.log.read_text()


def test_a_worker_killed_mid_push_loses_nothing_acknowledged(multi_receiver, ct_modality):
    receiver = multi_receiver(processes=2, DICOM_MAX_ASSOCIATIONS="1")
    workers = receiver.wait_for_workers(2)
    study = "1.2.826.0.1.3680043.10.9.1"
    datasets = [make_dataset(study_uid=study, series_uid=f"{study}.1", instance_number=n) for n in range(1, 81)]
    acknowledged: list[str] = []

    def kill_when_stored(count: int) -> None:
        # From another thread, so the workers die wherever they are: inside a C-STORE,
        # between the file and the index, or between two messages.
        try:
            while Instance.objects.count() < count:
                time.sleep(0.005)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
        finally:
            connection.close()

    killer = threading.Thread(target=kill_when_stored, args=(15,))
    assoc = associate(receiver.address, ct_modality.ae_title)
    assert assoc.is_established
    killer.start()
    for ds in datasets:
        try:
            status = assoc.send_c_store(ds)
        except Exception:
            break
        if getattr(status, "Status", None) != 0x0000:
            break
        acknowledged.append(ds.SOPInstanceUID)
    killer.join(timeout=60)
    assoc.abort()
    # The instance the kill interrupted may be stored without its answer: never the reverse.
    assert 10 <= len(acknowledged) < len(datasets)
    # Every acknowledged instance is indexed, and its file is there, whole.
    stored = {instance.sop_instance_uid: instance for instance in Instance.objects.all()}
    for uid in acknowledged:
        instance = stored[uid]
        assert dataset_digest(path_for(instance.storage_key)) == instance.sha256
    # The parent gave the killed workers' places back (DICOM_MAX_ASSOCIATIONS=1) and
    # started new ones: the console sends it all again, what was stored is a duplicate.
    receiver.wait_for_workers(2, ready_lines=4)
    assert not set(receiver.workers()) & set(workers)
    assert push(receiver.address, ct_modality.ae_title, datasets) == [0x0000] * len(datasets)
    assert Instance.objects.filter(series__study__study_uid=study).count() == len(datasets)
    assert "receiver worker 0 (pid" in receiver.log.read_text()
