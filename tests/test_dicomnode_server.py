"""The DICOM receiver over real sockets: pynetdicom and dcmtk clients against a server
started on a free port of 127.0.0.1, as a township console would talk to it."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation as DXStorage

from cloudpacs import services, storage
from cloudpacs.models import Instance, Patient, Series, Study
from cloudpacs.storage import path_for
from consults.models import Consult
from consults.tasks import sweep_stable_studies
from dicomnode.queryretrieve import OPENED
from facilities.models import AuditEvent, ExamKind, Modality
from tests import store_clients
from tests.factories import make_dataset, make_facility, make_modality, write_dataset

pytestmark = pytest.mark.django_db(transaction=True)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


# What a township console offers: C-ECHO, CT in either little-endian syntax, DX and MR.
CONSOLE_CONTEXTS = [
    (Verification, []),
    (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    (DXStorage, [ExplicitVRLittleEndian]),
    (MRImageStorage, [ExplicitVRLittleEndian]),
]


def client_ae(title: str, contexts: list[tuple[str, list[str]]] | None = None) -> AE:
    return store_clients.client_ae(title, contexts or CONSOLE_CONTEXTS, acse_timeout=10)


def send(
    address: tuple[str, int], calling: str, datasets: list, called: str = "CLOUDPACS", ae: AE | None = None
) -> list:
    ae = ae or client_ae(calling)
    assoc = ae.associate(address[0], address[1], ae_title=called, evt_handlers=OPENED)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


def good_association_still_works(address: tuple[str, int], calling: str) -> None:
    ds = make_dataset(patient_id="AFTER")
    assert send(address, calling, [ds]) == [0x0000]
    assert Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).exists()


def storescu(address: tuple[str, int], calling: str, paths: list[Path], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["storescu", "-aet", calling, "-aec", "CLOUDPACS", *extra, address[0], str(address[1]), *map(str, paths)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_answers_echo_from_a_registered_modality(receiver, ct_modality):
    ae = client_ae(ct_modality.ae_title)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_it_answers_echoscu(receiver, ct_modality):
    result = subprocess.run(
        ["echoscu", "-aet", ct_modality.ae_title, "-aec", "CLOUDPACS", receiver[0], str(receiver[1])],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_a_connection_on_a_descriptor_past_1024_is_served(ct_modality, settings, tmp_path):
    """select() cannot watch a descriptor numbered 1024 or more, and pynetdicom's check for
    bytes to read used it: in a process holding that many descriptors (connections, files,
    database connections) each newer connection was taken for closed. Here the receiver's
    process holds over 1,100, so its connections get numbers past 1024; dcmtk's clients run
    in processes of their own."""
    from pynetdicom import evt

    from dicomnode import server as dicomnode
    from tests.processes import descriptors_past

    settings.DICOM_AE_TITLE = "CLOUDPACS"
    numbers: list[int] = []
    server = dicomnode.start_server("127.0.0.1", 0, block=False)
    server.bind(evt.EVT_CONN_OPEN, lambda event: numbers.append(event.assoc.dul.socket.socket.fileno()))
    try:
        with descriptors_past(1100):
            address = ("127.0.0.1", server.server_address[1])
            ds = make_dataset()
            echo = subprocess.run(
                ["echoscu", "-aet", ct_modality.ae_title, "-aec", "CLOUDPACS", *map(str, address)],
                env=DCMTK_ENV,
                capture_output=True,
                text=True,
                timeout=30,
            )
            stored = storescu(address, ct_modality.ae_title, [write_dataset(ds, tmp_path / "ct.dcm")])
    finally:
        server.shutdown()
    assert len(numbers) == 2 and min(numbers) >= 1024, numbers
    assert echo.returncode == 0, echo.stderr
    assert stored.returncode == 0, stored.stderr
    assert Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).exists()


def test_it_rejects_an_unknown_calling_ae(receiver, ct_modality):
    assoc = client_ae("STRANGER").associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x03)
    good_association_still_works(receiver, ct_modality.ae_title)


def test_it_rejects_an_inactive_modality(receiver, ct_modality):
    Modality.objects.filter(pk=ct_modality.pk).update(is_active=False)
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x03


def test_it_rejects_a_wrong_called_ae(receiver, ct_modality):
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="SOMEONE_ELSE")
    assert assoc.is_rejected
    rejection = assoc.acceptor.primitive
    assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x01, 0x01, 0x07)


def test_it_rejects_echoscu_with_an_unknown_ae(receiver, ct_modality):
    result = subprocess.run(
        ["echoscu", "-aet", "STRANGER", "-aec", "CLOUDPACS", receiver[0], str(receiver[1])],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr + result.stdout


def test_it_rejects_a_peer_from_another_address_when_asked_to_check(receiver, ct_modality, settings):
    settings.DICOM_CHECK_PEER_ADDRESS = True
    Modality.objects.filter(pk=ct_modality.pk).update(host="10.9.8.7")
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_rejected
    Modality.objects.filter(pk=ct_modality.pk).update(host="127.0.0.1")
    good_association_still_works(receiver, ct_modality.ae_title)


def test_it_stores_a_ct_series_and_indexes_it_for_the_facility(storage_backend, receiver, ct_modality):
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [
        make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n, patient_id="CT1")
        for n in range(1, 6)
    ]
    assert send(receiver, ct_modality.ae_title, datasets) == [0x0000] * 5
    study = Study.objects.get(study_uid=study_uid)
    assert study.facility == ct_modality.facility
    assert study.modality == ct_modality
    assert services.study_instances(study) == 5
    assert study.number_of_series == 1
    assert study.status == Study.Status.RECEIVING
    assert study.institution_name == "Test Township Health Centre"
    assert study.station_name == "STATION1"
    assert study.modalities_in_study == "CT"
    assert services.series_instances(Series.objects.get(series_uid=series_uid)) == 5
    assert study.patient.facility == ct_modality.facility
    for ds in datasets:
        instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
        with storage.open_key(instance.storage_key) as stream:
            stored = dcmread(stream)
        assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert stored.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert stored.PixelData == ds.PixelData
        assert storage.size_of(instance.storage_key) == instance.size


def test_it_stores_the_received_bytes_without_re_encoding(receiver, ct_modality, tmp_path):
    ds = make_dataset(transfer_syntax_uid=ImplicitVRLittleEndian)
    original = write_dataset(ds, tmp_path / "ct.dcm")
    result = storescu(receiver, ct_modality.ae_title, [original], "-xi")
    assert result.returncode == 0, result.stderr
    instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    assert instance.transfer_syntax_uid == ImplicitVRLittleEndian

    def dataset_bytes(path: Path) -> bytes:
        data = path.read_bytes()
        meta_length = int.from_bytes(data[140:144], "little")
        return data[144 + meta_length :]

    assert dataset_bytes(path_for(instance.storage_key)) == dataset_bytes(original)


def test_it_stores_a_ct_series_sent_by_storescu(receiver, ct_modality, tmp_path):
    study_uid = generate_uid()
    series_uid = generate_uid()
    paths = [
        write_dataset(
            make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n), tmp_path / f"{n}.dcm"
        )
        for n in range(1, 21)
    ]
    result = storescu(receiver, ct_modality.ae_title, paths)
    assert result.returncode == 0, result.stderr
    assert services.study_instances(Study.objects.get(study_uid=study_uid)) == 20
    assert Instance.objects.filter(series__series_uid=series_uid).count() == 20


def test_it_stores_a_large_radiograph_received_chunked_to_disk(receiver, dr_modality, tmp_path):
    ds = make_dataset(
        sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", rows=3000, columns=2500, patient_id="DX1"
    )
    path = write_dataset(ds, tmp_path / "dx.dcm")
    result = storescu(receiver, dr_modality.ae_title, [path])
    assert result.returncode == 0, result.stderr
    instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    assert (instance.rows, instance.columns) == (3000, 2500)
    assert instance.size > 3000 * 2500 * 2
    assert dcmread(path_for(instance.storage_key)).PixelData == ds.PixelData


def test_it_stores_an_rle_compressed_instance_as_received(receiver, ct_modality):
    ds = make_dataset()
    ds.compress(RLELossless)
    ae = client_ae(ct_modality.ae_title, [(CTImageStorage, [RLELossless])])
    assert send(receiver, ct_modality.ae_title, [ds], ae=ae) == [0x0000]
    instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    assert instance.transfer_syntax_uid == RLELossless
    stored = dcmread(path_for(instance.storage_key))
    assert stored.file_meta.TransferSyntaxUID == RLELossless
    assert stored.PixelData == ds.PixelData


def jpeg_baseline_dataset() -> object:
    ds = make_dataset(modality="DX", sop_class_uid=DigitalXRayImageStorageForPresentation, rows=128, columns=96)
    pixels = (np.arange(128 * 96, dtype=np.uint32).reshape(128, 96) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=90)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


def test_it_stores_a_jpeg_baseline_instance_sent_by_storescu(receiver, dr_modality, tmp_path):
    ds = jpeg_baseline_dataset()
    path = tmp_path / "jpeg.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = storescu(receiver, dr_modality.ae_title, [path], "-xy")
    assert result.returncode == 0, result.stderr
    instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    assert instance.transfer_syntax_uid == JPEGBaseline8Bit
    assert dcmread(path_for(instance.storage_key)).PixelData == ds.PixelData


@pytest.mark.parametrize(
    ("character_set", "name", "alphabetic", "ideographic"),
    [
        ("ISO_IR 192", "Zhang^San=张^三=zhang^san", "Zhang^San", "张^三"),
        ("GB18030", "Wang^Xiaoming=王^小明", "Wang^Xiaoming", "王^小明"),
        ("GB18030", "李^四", "李^四", ""),
    ],
)
def test_it_decodes_chinese_names_in_their_character_set(
    receiver, ct_modality, tmp_path, character_set, name, alphabetic, ideographic
):
    ds = make_dataset(character_set=character_set, patient_name=name, patient_id=f"CN-{character_set}-{len(name)}")
    path = write_dataset(ds, tmp_path / "cn.dcm")
    result = storescu(receiver, ct_modality.ae_title, [path])
    assert result.returncode == 0, result.stderr
    patient = Patient.objects.get(facility=ct_modality.facility, patient_id=ds.PatientID)
    assert patient.name_alphabetic == alphabetic
    assert patient.name_ideographic == ideographic
    assert Study.objects.get(study_uid=ds.StudyInstanceUID).specific_character_set == character_set


def test_it_keeps_one_copy_of_an_identical_re_send(receiver, ct_modality):
    ds = make_dataset()
    assert send(receiver, ct_modality.ae_title, [ds]) == [0x0000]
    assert send(receiver, ct_modality.ae_title, [ds]) == [0x0000]
    assert Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).count() == 1
    assert services.study_instances(Study.objects.get(study_uid=ds.StudyInstanceUID)) == 1
    stored = [p for p in Path(settings.STORAGE_ROOT).rglob("*.dcm")]
    assert len(stored) == 1


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_it_refuses_a_dataset_without_a_uid(receiver, ct_modality, missing):
    ds = make_dataset()
    uid = ds.SOPInstanceUID
    delattr(ds, missing)
    ae = client_ae(ct_modality.ae_title)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    if missing == "SOPInstanceUID":
        # pynetdicom takes the request's UID from the dataset: send it raw instead.
        status = send_raw(assoc, CTImageStorage, uid, encode(ds))
    else:
        status = assoc.send_c_store(ds).Status
    assoc.release()
    assert status == 0xC001
    assert not Instance.objects.exists()
    assert not list(Path(settings.STORAGE_ROOT).rglob("*.dcm"))
    good_association_still_works(receiver, ct_modality.ae_title)


def encode(ds) -> bytes:
    """The bare dataset, explicit VR little endian, as a client would put it on the wire."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset as write_bare

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_bare(buffer, ds)
    return buffer.getvalue()


def send_raw(assoc, sop_class: str, sop_instance_uid: str, payload: bytes) -> int:
    """Send arbitrary dataset bytes in an explicit VR little endian context."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = Path(settings.STORAGE_ROOT).parent / f"raw-{sop_instance_uid}.dcm"
    with open(path, "wb") as stream:
        stream.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(stream, meta)
        stream.write(payload)
    return store_clients.send_file_as_is(assoc, path).Status


def test_it_refuses_a_payload_that_is_not_dicom(receiver, ct_modality):
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    garbage = b"\x08\x00\x16\x00UI\xff\xff" + random.Random(3).randbytes(2000)
    status = send_raw(assoc, CTImageStorage, generate_uid(), garbage)
    assoc.release()
    assert 0xC000 <= status <= 0xCFFF
    assert not Instance.objects.exists()
    good_association_still_works(receiver, ct_modality.ae_title)


def test_it_refuses_a_truncated_dataset(receiver, ct_modality):
    ds = make_dataset()
    payload = encode(ds)[:-3000]
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    status = send_raw(assoc, CTImageStorage, ds.SOPInstanceUID, payload)
    assoc.release()
    assert 0xC000 <= status <= 0xCFFF
    assert not Instance.objects.exists()
    good_association_still_works(receiver, ct_modality.ae_title)


def test_it_refuses_a_dataset_whose_sop_class_disagrees_with_its_context(receiver, ct_modality):
    ds = make_dataset(sop_class_uid=MRImageStorage, modality="MR")
    assoc = client_ae(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS")
    status = send_raw(assoc, CTImageStorage, ds.SOPInstanceUID, encode(ds))
    assoc.release()
    assert status == 0xA900
    assert not Instance.objects.exists()
    good_association_still_works(receiver, ct_modality.ae_title)


def test_it_answers_out_of_resources_when_the_disk_is_full(receiver, ct_modality, monkeypatch):
    import errno

    from cloudpacs import storage

    real_stage = storage.stage

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "stage", full_disk)
    ds = make_dataset()
    assert send(receiver, ct_modality.ae_title, [ds]) == [0xA700]
    assert not Instance.objects.exists()
    monkeypatch.setattr(storage, "stage", real_stage)
    good_association_still_works(receiver, ct_modality.ae_title)


def test_it_serves_eleven_townships_pushing_at_once(receiver):
    modalities = [make_modality(make_facility(f"TOWN{n:02d}"), ExamKind.CT, f"TOWN{n:02d}_CT") for n in range(11)]
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    expected: dict[str, str] = {}

    def push(modality: Modality) -> None:
        try:
            study_uid, series_uid = generate_uid(), generate_uid()
            expected[modality.ae_title] = study_uid
            datasets = [
                make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n, patient_id="P0001")
                for n in range(1, 11)
            ]
            results[modality.ae_title] = send(receiver, modality.ae_title, datasets)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(modality,)) for modality in modalities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert all(statuses == [0x0000] * 10 for statuses in results.values()), results
    assert len(results) == 11
    assert Instance.objects.count() == 110
    # The same Patient ID at eleven facilities is eleven patients.
    assert Patient.objects.filter(patient_id="P0001").count() == 11
    for modality in modalities:
        assert services.study_instances(Study.objects.get(study_uid=expected[modality.ae_title])) == 10


def test_a_stable_study_gets_one_consult_and_late_images_mark_it_updated(receiver, ct_modality, settings):
    settings.STUDY_STABLE_SECONDS = 0
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [make_dataset(study_uid=study_uid, series_uid=series_uid, instance_number=n) for n in range(1, 4)]
    assert send(receiver, ct_modality.ae_title, datasets) == [0x0000] * 3
    sweep_stable_studies.delay()
    sweep_stable_studies.delay()
    study = Study.objects.get(study_uid=study_uid)
    assert study.status == Study.Status.ARRIVED
    consult = Consult.objects.get(study=study)
    assert consult.kind == ExamKind.CT
    assert consult.facility == ct_modality.facility
    assert consult.arrived_at == study.last_received_at
    assert AuditEvent.objects.filter(action="consults.consult.created", object_id=str(consult.uuid)).count() == 1

    late = make_dataset(study_uid=study_uid, series_uid=generate_uid(), instance_number=9)
    assert send(receiver, ct_modality.ae_title, [late]) == [0x0000]
    sweep_stable_studies.delay()
    study.refresh_from_db()
    assert study.status == Study.Status.UPDATED
    assert study.number_of_instances == 4
    assert study.number_of_series == 2
    assert Consult.objects.filter(study=study).count() == 1


def test_dcmtk_is_installed_for_these_tests():
    assert shutil.which("storescu") and shutil.which("echoscu")


def test_it_stores_a_deflated_instance_as_received(receiver, ct_modality):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = make_dataset(character_set="ISO_IR 192", patient_name="Zhang^San=张^三")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ae = client_ae(ct_modality.ae_title, [(CTImageStorage, [DeflatedExplicitVRLittleEndian])])
    assert send(receiver, ct_modality.ae_title, [ds], ae=ae) == [0x0000]
    instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    assert instance.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    assert dcmread(path_for(instance.storage_key)).PixelData == ds.PixelData
    assert Patient.objects.get(patient_id=ds.PatientID).name_ideographic == "张^三"


@pytest.mark.parametrize("client", store_clients.CLIENTS)
def test_it_stores_an_instance_whose_type_2_numbers_are_empty(receiver, ct_modality, tmp_path, client):
    # Series Number and Instance Number are Type 2 in most IODs: present, and often empty
    # (ECG carts, RT planning systems, secondary captures). An empty IS decodes to None,
    # which the receiver once took for a deferred bulk value and refused with 0xC000.
    ds = make_dataset()
    ds.SeriesNumber = None
    ds.InstanceNumber = None
    ds.AccessionNumber = ""
    answer = store_clients.SENDERS[client](receiver, ct_modality.ae_title, ds, tmp_path)
    assert (answer.status, answer.comment) == (0x0000, "")
    instance = Instance.objects.select_related("series").get(sop_instance_uid=ds.SOPInstanceUID)
    assert instance.instance_number is None
    assert instance.series.series_number is None


def test_each_association_gets_its_own_copy_of_the_servers_contexts():
    """The contexts pynetdicom copies for every association: equal to what copy.deepcopy
    made, and sharing nothing that can change with the server's or another association's.
    A pynetdicom whose contexts hold anything else that can change fails here."""
    import copy

    from dicomnode.server import SupportedContexts, build_ae

    contexts = SupportedContexts(build_ae().supported_contexts)
    deep = copy.deepcopy(list(contexts))
    copied = copy.deepcopy(contexts)
    assert len(copied) == len(contexts) > 150
    for original, made, reference in zip(contexts, copied, deep, strict=True):
        assert type(made) is type(original)
        assert made is not original
        assert vars(made) == vars(reference)
        assert made._transfer_syntax is not original._transfer_syntax
        for name, value in vars(made).items():
            if name != "_transfer_syntax":
                assert value is None or isinstance(value, str | int), name
        assert all(isinstance(syntax, str) for syntax in made._transfer_syntax)
    copied[0].context_id = 1
    copied[0].scp_role = True
    copied[0].add_transfer_syntax("1.2.3.4")
    assert contexts[0].context_id is None
    assert contexts[0].scp_role is not True
    assert "1.2.3.4" not in contexts[0].transfer_syntax


def test_the_receivers_associations_negotiate_on_copies_of_its_contexts(settings, ct_modality):
    from dicomnode.server import SupportedContexts, start_server

    settings.DICOM_AE_TITLE = "CLOUDPACS"
    server = start_server("127.0.0.1", 0, block=False)
    try:
        assert isinstance(server.contexts, SupportedContexts)
        for _ in range(2):
            ae = client_ae(ct_modality.ae_title)
            assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="CLOUDPACS")
            try:
                assert assoc.is_established
                accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
                assert {CTImageStorage, DXStorage, MRImageStorage, Verification} <= accepted
                assert assoc.send_c_echo().Status == 0x0000
            finally:
                assoc.release()
        # Negotiation numbered and answered the association's copies, not the server's.
        assert all(context.context_id is None and context.result is None for context in server.contexts)
    finally:
        server.shutdown()
