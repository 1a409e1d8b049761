"""Limits per association: no more than DICOM_MAX_INSTANCES_PER_ASSOCIATION instances in
one association, no instance over DICOM_MAX_INSTANCE_BYTES. Over a limit the receiver
answers 0xA700 (out of resources), logs why, keeps nothing of that instance, and carries
on serving this association's other requests and every other association."""

from __future__ import annotations

import logging
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from cloudpacs.models import Instance
from dicomnode import server as dicomnode
from dicomnode.models import AssociationLog
from dicomnode.queryretrieve import OPENED
from tests.factories import make_dataset

pytestmark = pytest.mark.django_db(transaction=True)

OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def receiving(tmp_path, monkeypatch) -> Path:
    """Where pynetdicom writes datasets as they arrive, to check nothing is left there."""
    directory = tmp_path / "receiving"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def receiver(settings, receiving) -> Iterator[tuple[str, int]]:
    settings.DICOM_AE_TITLE = "CLOUDPACS"
    server = dicomnode.start_server("127.0.0.1", 0, block=False)
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()


def send(address: tuple[str, int], calling: str, datasets: list) -> list[int]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*address, ae_title="CLOUDPACS", evt_handlers=OPENED)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def logged(count: int) -> list[AssociationLog]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and AssociationLog.objects.count() < count:
        time.sleep(0.1)
    return list(AssociationLog.objects.order_by("started_at"))


def stored_files() -> list[Path]:
    root = Path(django_settings.STORAGE_ROOT)
    return [p for p in root.rglob("*.dcm") if ".receiving" not in p.parts] if root.exists() else []


def test_the_defaults_are_ten_thousand_instances_and_two_gibibytes():
    assert django_settings.DICOM_MAX_INSTANCES_PER_ASSOCIATION == 10_000
    assert django_settings.DICOM_MAX_INSTANCE_BYTES == 2 * 1024**3


def test_instances_over_the_count_limit_are_refused_and_the_next_association_is_served(
    receiver, ct_modality, settings, caplog
):
    settings.DICOM_MAX_INSTANCES_PER_ASSOCIATION = 2
    datasets = [make_dataset() for _ in range(4)]
    with caplog.at_level(logging.WARNING, logger="dicomnode"):
        statuses = send(receiver, ct_modality.ae_title, datasets)
    assert statuses == [0x0000, 0x0000, OUT_OF_RESOURCES, OUT_OF_RESOURCES]
    stored = set(Instance.objects.values_list("sop_instance_uid", flat=True))
    assert stored == {datasets[0].SOPInstanceUID, datasets[1].SOPInstanceUID}
    assert "over the limit of 2 instances per association" in caplog.text
    assert datasets[2].SOPInstanceUID in caplog.text

    later = make_dataset()
    assert send(receiver, ct_modality.ae_title, [later]) == [0x0000]
    first, second = logged(2)
    assert (first.instances_stored, first.instances_failed) == (2, 2)
    assert (second.instances_stored, second.instances_failed) == (1, 0)


def test_an_instance_passing_the_size_limit_while_it_arrives_aborts_the_association_and_keeps_nothing_of_it(
    receiver, ct_modality, settings, caplog, receiving
):
    small, large, after = make_dataset(), make_dataset(rows=1024, columns=1024), make_dataset()
    settings.DICOM_MAX_INSTANCE_BYTES = 100_000  # the small one is about 9 KB, the large one 2 MB
    ae = AE(ae_title=ct_modality.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    with caplog.at_level(logging.WARNING, logger="dicomnode"):
        assoc = ae.associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
        assert assoc.is_established
        assert assoc.send_c_store(small).Status == 0x0000
        started = time.monotonic()
        answer = assoc.send_c_store(large)
        elapsed = time.monotonic() - started
        # A-ABORT: no response at all, at once, not after the whole 2 MB nor a timeout.
        assert "Status" not in answer
        assert elapsed < 5
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
        [row] = logged(1)
    assert row.outcome == AssociationLog.Outcome.ABORTED
    assert "DICOM_MAX_INSTANCE_BYTES" in row.reason
    received = int(row.reason.rsplit("aborted after ", 1)[1].split()[0])
    assert 100_000 < received < 1024 * 1024 * 2 / 4  # stopped a fraction of the way in
    assert (row.instances_stored, row.instances_failed) == (1, 0)
    assert "aborting the association of XUANWO_CT" in caplog.text
    assert not Instance.objects.filter(sop_instance_uid=large.SOPInstanceUID).exists()
    assert len(stored_files()) == 1
    assert list(receiving.iterdir()) == []  # the partial file is gone too
    # The receiver goes on serving this console.
    assert send(receiver, ct_modality.ae_title, [after]) == [0x0000]
    assert Instance.objects.count() == 2


def test_a_pdu_larger_than_the_receiver_reads_closes_the_connection_without_waiting_for_it(receiver, settings):
    # A header claiming 64 MB more than the ceiling, then a little data: the receiver must
    # hang up at the header, not wait (and hold memory) for a body that never comes.
    claimed = dicomnode.pdu_ceiling() + 64 * 1024 * 1024
    with socket.create_connection(receiver, timeout=10) as sock:
        sock.sendall(struct.pack(">BBL", 0x01, 0, claimed) + b"\x00" * 4096)
        try:
            answer = sock.recv(1024)
        except ConnectionResetError:
            answer = b""
    assert answer == b""  # closed: no A-ASSOCIATE-AC/RJ, and no 10 s timeout on the wait


def test_the_ceiling_follows_the_maximum_pdu_offered(settings):
    settings.DICOM_MAX_PDU = 16384
    assert dicomnode.pdu_ceiling() == dicomnode.ASSOCIATE_RQ_CEILING
    settings.DICOM_MAX_PDU = 0
    assert dicomnode.pdu_ceiling() == dicomnode.UNLIMITED_PDU_CEILING
