"""Retrieve to a destination that takes only uncompressed syntaxes: consoles and older
workstations accept Implicit and Explicit VR Little Endian only, and an instance stored
compressed failed its C-MOVE or C-GET sub-operation (no context in its syntax). Over real
sockets: dcmtk `movescu` to a pynetdicom storage SCP on 127.0.0.1 (dcmtk 3.6.7's storescp
binds every address), dcmtk `getscu` receiving itself; pixels compared with the stored
object's, decoded here."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from cloudpacs import storage
from cloudpacs.models import Instance
from cloudpacs.services import ingest_instance
from dicomnode import queryretrieve as dicomnode_qr
from facilities.models import ApplicationEntity

pytestmark = pytest.mark.django_db(transaction=True)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
CLASSES = [SecondaryCaptureImageStorage, MRImageStorage, CTImageStorage]
# pydicom's own files, one per syntax a console may not take.
SOURCES = {
    JPEGBaseline8Bit: "SC_rgb_dcmtk_+eb+cy+s2.dcm",  # YBR_FULL_422, lossy
    JPEGLosslessSV1: "SC_rgb_jpeg_gdcm.dcm",
    JPEGLSLossless: "MR_small_jpeg_ls_lossless.dcm",
    JPEG2000Lossless: "MR_small_jp2klossless.dcm",
    RLELossless: "SC_rgb_rle_2frame.dcm",  # two frames
    DeflatedExplicitVRLittleEndian: "image_dfl.dcm",
}


@dataclass
class Stored:
    study_uid: str
    # SOP Instance UID -> (stored syntax, the stored file's pixels decoded here)
    pixels: dict[str, tuple[str, np.ndarray]]


def store(ds: Dataset, study_uid: str, modality: Any, tmp: Path) -> str:
    """`ds` as one instance of the study, ingested as received in its own syntax."""
    uid = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "XW100", "Wu^Ming", "19600101", "M"
    path = tmp / f"{uid}.dcm"
    ds.save_as(path)
    ingest_instance(
        path,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=uid,
        modality=modality,
    )
    return uid


@pytest.fixture
def compressed_study(ct_modality, tmp_path) -> Stored:
    study_uid = generate_uid()
    pixels = {}
    for syntax, name in SOURCES.items():
        ds = dcmread(get_testdata_file(name))
        assert ds.file_meta.TransferSyntaxUID == syntax
        uid = store(ds, study_uid, ct_modality, tmp_path)
        pixels[uid] = (syntax, dcmread(get_testdata_file(name)).pixel_array)
    return Stored(study_uid, pixels)


@pytest.fixture
def workstation(township) -> ApplicationEntity:
    return ApplicationEntity.objects.create(
        ae_title="XUANWO_WS", role=ApplicationEntity.Role.WORKSTATION, facility=township,
        may_query=True, may_retrieve=True,
    )  # fmt: skip


def collector(received: dict[str, Dataset]) -> Callable[[evt.Event], int]:
    """An EVT_C_STORE handler keeping each dataset received, its file meta with it, by SOP Instance UID."""

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    return on_store


@dataclass
class Console:
    received: dict[str, Dataset]


@pytest.fixture
def console(township, request) -> Iterator[Console]:
    """A move destination on 127.0.0.1 that accepts only the syntaxes the test names
    (`@pytest.mark.parametrize("console", [[...]], indirect=True)`), Explicit and Implicit
    VR Little Endian unless told."""
    syntaxes = getattr(request, "param", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    received: dict[str, Dataset] = {}
    on_store = collector(received)

    ae = AE(ae_title="OLD_CONSOLE")
    for sop_class in CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        ApplicationEntity.objects.create(
            ae_title="OLD_CONSOLE", role=ApplicationEntity.Role.WORKSTATION, facility=township,
            is_move_destination=True, host="127.0.0.1", port=server.server_address[1],
        )  # fmt: skip
        yield Console(received)
    finally:
        server.shutdown()


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], env=DCMTK_ENV, capture_output=True, text=True, timeout=120)


def movescu(receiver: tuple[str, int], study_uid: str) -> subprocess.CompletedProcess[str]:
    return dcmtk(
        "movescu", "-v", "-S", "-aet", "XUANWO_WS", "-aec", "CLOUDPACS", "-aem", "OLD_CONSOLE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        *map(str, receiver),
    )  # fmt: skip


def move(receiver: tuple[str, int], study_uid: str) -> tuple[Dataset, Dataset | None]:
    """A C-MOVE of the study to OLD_CONSOLE from pynetdicom: the final response and its
    identifier (the Failed SOP Instance UID List)."""
    ae = AE(ae_title="XUANWO_WS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        return list(assoc.send_c_move(identifier, "OLD_CONSOLE", StudyRootQueryRetrieveInformationModelMove))[-1]
    finally:
        assoc.release()


def assert_same_pixels(got: Dataset, expected: np.ndarray) -> None:
    assert got.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    decoded = got.pixel_array
    assert decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)


def test_movescu_gets_every_compressed_instance_decompressed_to_a_console_that_takes_none(
    receiver, workstation, compressed_study, console
):
    result = movescu(receiver, compressed_study.study_uid)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Received Final Move Response (Success)" in result.stderr
    assert sorted(console.received) == sorted(compressed_study.pixels)
    for uid, (syntax, expected) in compressed_study.pixels.items():
        got = console.received[uid]
        assert_same_pixels(got, expected)
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        if syntax == JPEGBaseline8Bit:
            # YBR_FULL_422 decoded is RGB, interleaved; the object stays marked lossy.
            assert (got.PhotometricInterpretation, got.PlanarConfiguration) == ("RGB", 0)
            assert got.LossyImageCompression == "01"
            assert "ISO_10918_1" in str(got.LossyImageCompressionMethod)
        elif syntax == RLELossless:
            assert got.NumberOfFrames == 2 and "LossyImageCompression" not in got
    # The archive keeps what it received.
    for instance in Instance.objects.filter(sop_instance_uid__in=compressed_study.pixels):
        with storage.open_key(instance.storage_key) as stream:
            assert dcmread(stream, stop_before_pixels=True).file_meta.TransferSyntaxUID == instance.transfer_syntax_uid
        assert instance.transfer_syntax_uid == compressed_study.pixels[instance.sop_instance_uid][0]


@pytest.mark.parametrize("console", [[ImplicitVRLittleEndian]], indirect=True)
def test_a_console_that_takes_only_implicit_vr_gets_implicit_vr(receiver, workstation, compressed_study, console):
    result = movescu(receiver, compressed_study.study_uid)
    assert result.returncode == 0, result.stderr + result.stdout
    assert sorted(console.received) == sorted(compressed_study.pixels)
    for uid, (_syntax, expected) in compressed_study.pixels.items():
        got = console.received[uid]
        assert got.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert_same_pixels(got, expected)


@pytest.mark.parametrize("console", [[ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless]], indirect=True)
def test_a_console_that_takes_the_stored_syntax_gets_the_stored_bytes(receiver, workstation, compressed_study, console):
    result = movescu(receiver, compressed_study.study_uid)
    assert result.returncode == 0, result.stderr + result.stdout
    syntaxes = {uid: syntax for uid, (syntax, _pixels) in compressed_study.pixels.items()}
    for uid, got in console.received.items():
        syntax = syntaxes[uid]
        if syntax in (JPEGBaseline8Bit, RLELossless):
            assert got.file_meta.TransferSyntaxUID == syntax
            instance = Instance.objects.get(sop_instance_uid=uid)
            with storage.open_key(instance.storage_key) as stream:
                assert got.PixelData == dcmread(stream).PixelData
        else:
            assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert sorted(console.received) == sorted(compressed_study.pixels)


def test_an_instance_that_cannot_be_decoded_here_fails_its_sub_operation_and_the_rest_go(
    receiver, workstation, ct_modality, console, tmp_path
):
    study_uid = generate_uid()
    jpeg = dcmread(get_testdata_file(SOURCES[JPEGBaseline8Bit]))
    sent = store(jpeg, study_uid, ct_modality, tmp_path)
    video = dcmread(get_testdata_file(SOURCES[JPEGBaseline8Bit]))
    video.file_meta.TransferSyntaxUID = MPEG2MPML
    video.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    failed = store(video, study_uid, ct_modality, tmp_path)
    final, identifier_back = move(receiver, study_uid)
    assert final.Status == 0xB000  # sub-operations complete, one or more failures
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 1)
    assert identifier_back.FailedSOPInstanceUIDList == failed
    assert sorted(console.received) == [sent]
    # Nothing lost: the video is still in the archive, as received.
    instance = Instance.objects.get(sop_instance_uid=failed)
    with storage.open_key(instance.storage_key) as stream:
        assert dcmread(stream).file_meta.TransferSyntaxUID == MPEG2MPML


def test_an_instance_past_the_decompression_limit_fails_its_sub_operation(
    receiver, workstation, compressed_study, console, settings
):
    # Smaller than the two-frame RLE's 60,000 decoded bytes, larger than every other.
    settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES = 50_000
    final, identifier_back = move(receiver, compressed_study.study_uid)
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (5, 1)
    [rle] = [uid for uid, (syntax, _pixels) in compressed_study.pixels.items() if syntax == RLELossless]
    assert identifier_back.FailedSOPInstanceUIDList == rle
    assert rle not in console.received and len(console.received) == 5


def test_two_moves_at_once_hold_at_most_the_budget_of_pixels_between_them(
    receiver, workstation, compressed_study, console, settings
):
    # Pynetdicom holds each sub-operation's whole message while it goes out: two
    # associations sending 90 MB instances at once held 180 MB. Decoded sizes here: 262,144
    # (deflated, sent alone), 60,000, 30,000 twice, 8,192 twice.
    settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES = 100_000
    dicomnode_qr.SENDING.peak = 0
    finals: list[Dataset] = []

    def one_move() -> None:
        finals.append(move(receiver, compressed_study.study_uid)[0])

    threads = [threading.Thread(target=one_move) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [final.Status for final in finals] == [0x0000, 0x0000]
    assert [final.NumberOfCompletedSuboperations for final in finals] == [6, 6]
    assert sorted(console.received) == sorted(compressed_study.pixels)
    assert 60_000 <= dicomnode_qr.SENDING.peak <= 100_000
    assert dicomnode_qr.SENDING.held == 0


def test_the_pixel_budget_makes_a_sub_operation_wait_for_room_and_a_larger_one_go_alone(settings):
    settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES = 100
    budget = dicomnode_qr.PixelBudget()
    entered: list[str] = []

    def hold(name: str, size: int, release: threading.Event) -> None:
        with budget.hold(size):
            entered.append(name)
            release.wait(10)

    first, second, third = threading.Event(), threading.Event(), threading.Event()
    a = threading.Thread(target=hold, args=("a", 60, first))
    a.start()
    while entered != ["a"]:
        time.sleep(0.01)
    b = threading.Thread(target=hold, args=("b", 60, second))  # 120 > 100: waits for a
    c = threading.Thread(target=hold, args=("c", 30, third))  # 90: fits beside a
    b.start()
    c.start()
    while "c" not in entered:
        time.sleep(0.01)
    time.sleep(0.2)
    assert entered == ["a", "c"] and budget.held == 90
    first.set()
    third.set()
    while "b" not in entered:
        time.sleep(0.01)
    assert entered == ["a", "c", "b"]
    second.set()
    for thread in (a, b, c):
        thread.join(10)
    assert budget.held == 0 and budget.peak == 90

    # Larger than the whole budget: waits for the others, then goes alone.
    with budget.hold(500):
        assert budget.held == 100


def test_getscu_gets_the_compressed_study_uncompressed(receiver, workstation, compressed_study, tmp_path):
    # dcmtk 3.6.7's getscu offers each storage class in Explicit VR Little Endian only.
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu", "-S", "-aet", "XUANWO_WS", "-aec", "CLOUDPACS", "-od", str(out),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={compressed_study.study_uid}",
        *map(str, receiver),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    got = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, out.iterdir())}
    assert sorted(got) == sorted(compressed_study.pixels)
    for uid, (_syntax, expected) in compressed_study.pixels.items():
        assert_same_pixels(got[uid], expected)
        assert got[uid].file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_a_c_get_requester_offering_jpeg_gets_jpeg_and_the_rest_decompressed(receiver, workstation, compressed_study):
    received: dict[str, Dataset] = {}
    on_store = collector(received)

    ae = AE(ae_title="XUANWO_WS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class in CLASSES:
        ae.add_requested_context(sop_class, [ImplicitVRLittleEndian])
        ae.add_requested_context(sop_class, [JPEGBaseline8Bit])
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = compressed_study.study_uid
    try:
        statuses = [s for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000
    assert sorted(received) == sorted(compressed_study.pixels)
    for uid, (syntax, expected) in compressed_study.pixels.items():
        got = received[uid]
        if syntax == JPEGBaseline8Bit:
            assert got.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        else:
            assert_same_pixels(got, expected)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_large_uncompressed_instance_is_sent_from_its_file_not_read_into_memory(
    receiver, workstation, ct_modality, console, tmp_path, syntax
):
    # Read whole, a 90 MB multi-frame instance was held twice while sent (read, then
    # encoded): 376 MB at the receiver's peak (bench/qr/transcode_memory.py).
    from cloudpacs import queryretrieve

    ds = dcmread(get_testdata_file("MR_small.dcm"))
    frames = 40  # 40 x 64 x 64 x 2 bytes: 320 KiB, past queryretrieve.DEFER_SIZE
    pixels = np.arange(frames * 64 * 64, dtype="<u2").reshape(frames, 64, 64) % 4096
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = syntax
    uid = store(ds, generate_uid(), ct_modality, tmp_path)
    [item] = queryretrieve.instances_to_retrieve(
        workstation, queryretrieve.ArchiveQuery("IMAGE", {"00080018": uid}, patient_root=False)
    )
    read = queryretrieve.read_instance(item)
    assert read["PixelData"].is_buffered
    assert read.PatientName == "Wu^Ming"

    result = movescu(receiver, str(ds.StudyInstanceUID))
    assert result.returncode == 0, result.stderr + result.stdout
    got = console.received[uid]
    assert got.PixelData == pixels.tobytes()
    assert np.array_equal(got.pixel_array, pixels)
