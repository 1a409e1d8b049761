"""The receiver hashes each dataset while it arrives and hands the digest to the archive,
which then need not read the file again: the digest must be exactly the stored file's
dataset digest, whatever the size, the client and the mix of messages."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time

import pytest
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation as DXStorage

from cloudpacs.models import Instance
from cloudpacs.storage import part10_dataset_offset, path_for
from dicomnode.queryretrieve import OPENED
from tests.factories import make_dataset, write_dataset

pytestmark = pytest.mark.django_db(transaction=True)


def file_digest(instance: Instance) -> str:
    data = path_for(instance.storage_key).read_bytes()
    offset = part10_dataset_offset(data[:4096])
    assert offset is not None
    return hashlib.sha256(data[offset:]).hexdigest()


def assert_digests_match_files(uids: list[str]) -> None:
    instances = list(Instance.objects.filter(sop_instance_uid__in=uids))
    assert len(instances) == len(uids)
    for instance in instances:
        assert instance.sha256 == file_digest(instance)


def test_digests_hashed_on_arrival_match_the_stored_files(receiver, ct_modality, caplog):
    ae = AE(ae_title=ct_modality.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
    ae.add_requested_context(DXStorage, [ExplicitVRLittleEndian])
    # Small datasets travel in the same PDU as their command; the large one in many PDUs
    # (16 KB maximum PDU here), with echoes in between.
    ae.maximum_pdu_size = 16384
    datasets = [
        make_dataset(transfer_syntax_uid=ImplicitVRLittleEndian),
        make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", rows=700, columns=600),
        make_dataset(transfer_syntax_uid=ImplicitVRLittleEndian, rows=16, columns=16),
    ]
    with caplog.at_level(logging.INFO, logger="dicomnode"):
        assoc = ae.associate(*receiver, ae_title="CLOUDPACS", max_pdu=16384, evt_handlers=OPENED)
        assert assoc.is_established
        statuses = []
        for ds in datasets:
            assert assoc.send_c_echo().Status == 0x0000
            statuses.append(assoc.send_c_store(ds).Status)
        assoc.release()
    assert statuses == [0x0000, 0x0000, 0x0000]
    assert_digests_match_files([str(ds.SOPInstanceUID) for ds in datasets])
    # The receiver logs the association's end after its release answer, once its log row
    # is written: on a loaded PostgreSQL, after release() has returned here.
    deadline = time.monotonic() + 30
    while "association released" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "(3 hashed on arrival)" in caplog.text


def test_digests_match_for_a_large_radiograph_sent_by_storescu(receiver, dr_modality, tmp_path):
    datasets = [
        make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", rows=1500, columns=1200),
        make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", rows=20, columns=20),
    ]
    paths = [write_dataset(ds, tmp_path / f"{n}.dcm") for n, ds in enumerate(datasets)]
    result = subprocess.run(
        [
            "storescu",
            "-aet",
            dr_modality.ae_title,
            "-aec",
            "CLOUDPACS",
            *receiver[:1],
            str(receiver[1]),
            *map(str, paths),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert_digests_match_files([str(ds.SOPInstanceUID) for ds in datasets])


def test_a_resent_instance_is_still_recognised_as_a_duplicate(receiver, ct_modality):
    ds = make_dataset(rows=300, columns=300)
    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    for _ in range(2):
        assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
    assert Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).count() == 1
    assert_digests_match_files([str(ds.SOPInstanceUID)])


def test_a_large_instance_is_moved_into_the_store_not_copied(receiver, dr_modality, monkeypatch):
    """A radiograph's bytes are written once: into pynetdicom's file as they arrive (and
    hashed then), which is renamed into `.incoming/` and linked at its key, as
    `manage.py dicomnode` receives on the store's filesystem. Nothing copies it or reads
    it back whole."""
    import tempfile

    from cloudpacs import storage
    from dicomnode.processes import receiving_dir

    receiving = receiving_dir()
    receiving.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(receiving))
    moved: list[tuple[int, int | None, bool]] = []
    adopt = storage._adopt

    def recording(source, temp, sha256=None):  # type: ignore[no-untyped-def]
        inode = source.stat().st_ino
        staged = adopt(source, temp, sha256)
        moved.append((inode, staged.path.stat().st_ino if staged is not None else None, sha256 is not None))
        return staged

    monkeypatch.setattr(storage, "_adopt", recording)
    copied: list[object] = []
    monkeypatch.setattr(storage, "file_meta_bytes", lambda *args, **kwargs: copied.append(args) or b"")
    ds = make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", rows=1500, columns=1200)
    ae = AE(ae_title=dr_modality.ae_title)
    ae.add_requested_context(DXStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    stored = path_for(instance.storage_key).stat()
    assert moved == [(stored.st_ino, stored.st_ino, True)]
    assert copied == []  # the copying branch of storage.stage never ran
    assert stored.st_size > 1500 * 1200 * 2
    assert_digests_match_files([str(ds.SOPInstanceUID)])
