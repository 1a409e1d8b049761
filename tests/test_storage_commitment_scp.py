"""Storage Commitment (push model) over real sockets: a console asks whether the archive
holds what it sent before it deletes its copy; the report comes on the same association
while it is open, otherwise on a new one to the console's registered host and port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StorageCommitmentPushModel

from facilities.models import AuditEvent, ExamKind
from tests.dicomweb_support import ingest
from tests.factories import make_dataset, make_modality

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = 1
WELL_KNOWN = "1.2.840.10008.1.20.1.1"


def request(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for class_uid, instance_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = class_uid
        item.ReferencedSOPInstanceUID = instance_uid
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


class Reports:
    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset, str]] = []
        self.arrived = threading.Event()

    def handler(self, how: str) -> Any:
        def on_report(event: evt.Event) -> tuple[int, None]:
            self.received.append((int(event.event_type), event.event_information, how))
            self.arrived.set()
            return 0x0000, None

        return on_report


@pytest.fixture
def stored(ct_modality, tmp_path) -> list[Dataset]:
    datasets = [make_dataset(instance_number=n) for n in (1, 2)]
    for ds in datasets:
        ingest(ds, ct_modality, tmp_path / "in")
    return datasets


@pytest.fixture
def elsewhere(other_township, tmp_path) -> Dataset:
    """An instance another township stored: not the console's to have committed."""
    ds = make_dataset(patient_id="PL9")
    ingest(ds, make_modality(other_township, ExamKind.DR, "PINGLIANG_DR"), tmp_path / "other")
    return ds


def console_ae() -> AE:
    ae = AE(ae_title="XUANWO_CT")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def test_the_report_comes_on_the_same_association_with_the_failures_and_their_reasons(
    storage_backend, receiver, stored, elsewhere
):
    reports = Reports()
    assoc = console_ae().associate(
        *receiver, ae_title="CLOUDPACS", evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler("same"))]
    )
    assert assoc.is_established
    transaction_uid = generate_uid()
    unknown = generate_uid()
    references = [
        (CTImageStorage, str(stored[0].SOPInstanceUID)),
        (CTImageStorage, str(stored[1].SOPInstanceUID)),
        (CTImageStorage, unknown),
        (MRImageStorage, str(stored[0].SOPInstanceUID)),
        (CTImageStorage, str(elsewhere.SOPInstanceUID)),
    ]
    try:
        status, _ = assoc.send_n_action(
            request(transaction_uid, references), REQUEST, StorageCommitmentPushModel, WELL_KNOWN
        )
        assert status.Status == 0x0000
        assert reports.arrived.wait(30)
    finally:
        assoc.release()
    [(event_type, info, how)] = reports.received
    assert (event_type, how) == (2, "same")
    assert info.TransactionUID == transaction_uid
    assert [str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence] == [
        str(stored[0].SOPInstanceUID),
        str(stored[1].SOPInstanceUID),
    ]
    failed = {
        (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)): i.FailureReason for i in info.FailedSOPSequence
    }
    assert failed == {
        (CTImageStorage, unknown): 0x0112,
        (MRImageStorage, str(stored[0].SOPInstanceUID)): 0x0119,
        (CTImageStorage, str(elsewhere.SOPInstanceUID)): 0x0112,
    }
    event = AuditEvent.objects.get(action="cloudpacs.storage_commitment.reported")
    assert event.object_id == transaction_uid
    assert (event.detail["committed"], event.detail["failed"]) == (2, 3)


@pytest.fixture
def console_listener(ct_modality) -> Iterator[Reports]:
    """The console's own SCP, registered as the modality's host and port, which takes the
    report on a new association (accepting the archive's SCP role)."""
    reports = Reports()
    ae = AE(ae_title="XUANWO_CT")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler("new"))]
    )
    ct_modality.host, ct_modality.port = "127.0.0.1", server.server_address[1]
    ct_modality.save()
    try:
        yield reports
    finally:
        server.shutdown()


def test_when_the_console_has_gone_the_report_comes_on_a_new_association(receiver, stored, console_listener):
    assoc = console_ae().associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    transaction_uid = generate_uid()
    references = [(CTImageStorage, str(ds.SOPInstanceUID)) for ds in stored]
    status, _ = assoc.send_n_action(
        request(transaction_uid, references), REQUEST, StorageCommitmentPushModel, WELL_KNOWN
    )
    assert status.Status == 0x0000
    # No handler for the report here: whether it came before the release or after, the
    # console's listener is where it is delivered.
    assoc.release()
    assert console_listener.arrived.wait(40)
    [(event_type, info, how)] = console_listener.received
    assert (event_type, how) == (1, "new")
    assert info.TransactionUID == transaction_uid
    assert "FailedSOPSequence" not in info
    assert len(info.ReferencedSOPSequence) == 2


def test_an_entity_that_may_not_store_is_refused_commitment(receiver, stored, county):
    from facilities.models import ApplicationEntity

    ApplicationEntity.objects.create(ae_title="COUNTY_WS", role="workstation", facility=county, may_query=True)
    ae = AE(ae_title="COUNTY_WS")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        references = [(CTImageStorage, str(stored[0].SOPInstanceUID))]
        status, _ = assoc.send_n_action(
            request(generate_uid(), references), REQUEST, StorageCommitmentPushModel, WELL_KNOWN
        )
    finally:
        assoc.release()
    assert status.Status == 0x0124


def test_a_request_without_its_transaction_uid_is_refused(receiver, stored):
    assoc = console_ae().associate(*receiver, ae_title="CLOUDPACS")
    try:
        ds = request(generate_uid(), [(CTImageStorage, str(stored[0].SOPInstanceUID))])
        del ds.TransactionUID
        status, _ = assoc.send_n_action(ds, REQUEST, StorageCommitmentPushModel, WELL_KNOWN)
    finally:
        assoc.release()
    assert status.Status == 0x0120
    time.sleep(0.1)
