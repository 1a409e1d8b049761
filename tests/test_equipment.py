"""What other vendors' equipment sends, over real sockets: every Storage SOP Class at
negotiation, vendor-like instances of US, XA, MG, NM, PT, ECG, PDF and video in several
transfer syntaxes, elements after the pixel data, pixel data whose length is wrong, the
exam kind taken from the data rather than the console, and WADO-RS rendered, thumbnails,
frames and bulk data for the colour, cine and video instances."""

from __future__ import annotations

import os
import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset as write_bare
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    MPEG4HP41,
    ComprehensiveSRStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    ParametricMapStorage,
    RLELossless,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)
from pynetdicom.sop_class import (
    BasicFilmSession,
    PatientRootQueryRetrieveInformationModelFind,
    Verification,
)

from billing.models import LedgerEntry
from cloudpacs.models import Instance, Study
from cloudpacs.storage import path_for
from consults.models import Consult
from consults.tasks import sweep_stable_studies
from dicomnode.contexts import RETIRED_STORAGE_CLASSES, STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from tests import equipment
from tests.conftest import login
from tests.factories import make_dataset
from tests.store_clients import client_ae, send_file_as_is

pytestmark = pytest.mark.django_db(transaction=True)

CALLED = "CLOUDPACS"
SUCCESS = 0x0000
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def send(address: tuple[str, int], calling: str, ds: Dataset, syntax: str | None = None) -> Dataset:
    """One C-STORE in a context of the dataset's class and `syntax` (its own by default);
    returns the response's status dataset."""
    syntax = syntax or str(ds.file_meta.TransferSyntaxUID)
    assoc = client_ae(calling, [(ds.SOPClassUID, [syntax])]).associate(*address, ae_title=CALLED)
    assert assoc.is_established
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def encode(ds: Dataset, little_endian: bool = True, implicit: bool = False) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = little_endian, implicit
    write_bare(buffer, ds)
    return buffer.getvalue()


def send_raw(address: tuple[str, int], calling: str, ds: Dataset, payload: bytes, syntax: str) -> Dataset:
    """Send exactly `payload` as the dataset, in a context of `syntax`: what a console with a
    broken encoder would put on the wire."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    path = Path(settings.STORAGE_ROOT).parent / f"raw-{ds.SOPInstanceUID}.dcm"
    with open(path, "wb") as stream:
        stream.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(stream, meta)
        stream.write(payload)
    assoc = client_ae(calling, [(ds.SOPClassUID, [syntax])]).associate(*address, ae_title=CALLED)
    assert assoc.is_established
    try:
        return send_file_as_is(assoc, path)
    finally:
        assoc.release()


def stored(ds: Dataset) -> Instance:
    return Instance.objects.select_related("series__study").get(sop_instance_uid=ds.SOPInstanceUID)


def refused(response: Dataset, ds: Dataset, words: str) -> None:
    """Refused as cannot understand, with why in the Error Comment, and nothing kept."""
    assert response.Status == 0xC000
    assert words in response.ErrorComment
    assert not Instance.objects.filter(sop_instance_uid=ds.SOPInstanceUID).exists()
    assert not list(Path(settings.STORAGE_ROOT).rglob(f"*{ds.SOPInstanceUID[-6:]}*.dcm"))


# --- Negotiation ---------------------------------------------------------------------


def test_every_storage_class_is_accepted_and_other_classes_are_refused(receiver, ct_modality):
    assert len(STORAGE_SOP_CLASSES) == 170 + len(RETIRED_STORAGE_CLASSES)
    others = [
        BasicFilmSession,
        "1.2.826.0.1.3680043.9.7433.1.1",  # a private class nobody registered
        "1.2.840.10008.5.1.4.38.1",  # Hanging Protocol Storage: non-patient, no study to file under
    ]
    proposed = [*STORAGE_SOP_CLASSES, *others]
    accepted: set[str] = set()
    rejected: set[str] = set()
    # At most 128 presentation contexts fit in one association request (PS3.8 9.3.2.2).
    for start in range(0, len(proposed), 127):
        chunk = proposed[start : start + 127]
        ae = client_ae(ct_modality.ae_title, [(Verification, [ExplicitVRLittleEndian])])
        for abstract in chunk:
            ae.add_requested_context(abstract, [ExplicitVRLittleEndian])
        assoc = ae.associate(*receiver, ae_title=CALLED)
        assert assoc.is_established
        accepted |= {str(context.abstract_syntax) for context in assoc.accepted_contexts}
        rejected |= {str(context.abstract_syntax) for context in assoc.rejected_contexts}
        assoc.release()
    assert set(STORAGE_SOP_CLASSES) <= accepted
    assert {str(other) for other in others} <= rejected


def test_query_retrieve_and_commitment_are_accepted_and_other_query_models_refused(receiver, ct_modality):
    entity = ct_modality.application_entity
    entity.may_retrieve = True
    entity.save()
    services = [
        PatientRootQueryRetrieveInformationModelFind,
        "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root MOVE
        "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root GET
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
    ]
    others = [
        "1.2.840.10008.5.1.4.1.2.4.2",  # Composite Instance Root Retrieve - MOVE
        "1.2.840.10008.5.1.4.1.2.5.3",  # Composite Instance Retrieve Without Bulk Data - GET
        "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model (retired)
    ]
    ae = client_ae(ct_modality.ae_title, [(abstract, [ExplicitVRLittleEndian]) for abstract in [*services, *others]])
    assoc = ae.associate(*receiver, ae_title=CALLED)
    assert assoc.is_established
    accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
    assoc.release()
    assert set(services) <= accepted
    assert not set(others) & accepted


def test_each_transfer_syntax_is_accepted_on_its_own(receiver, ct_modality):
    contexts = [(UltrasoundMultiFrameImageStorage, [syntax]) for syntax in TRANSFER_SYNTAXES]
    assoc = client_ae(ct_modality.ae_title, contexts).associate(*receiver, ae_title=CALLED)
    assert assoc.is_established
    accepted = {str(context.transfer_syntax[0]) for context in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {str(syntax) for syntax in TRANSFER_SYNTAXES}
    for video in ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.107"):
        assert video in accepted


# --- Vendor-like instances, stored as received --------------------------------------


def _of_class(ds: Dataset, sop_class_uid: str) -> Dataset:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    return ds


def _compressed(ds: Dataset, syntax: str) -> Dataset:
    ds.compress(syntax)
    return ds


CASES = {
    "us-rgb": (lambda: equipment.us_single_rgb(), ExplicitVRLittleEndian),
    "us-rgb-planar-implicit": (lambda: equipment.us_single_rgb(planar=1), ImplicitVRLittleEndian),
    "us-cine": (lambda: equipment.us_cine(), ExplicitVRLittleEndian),
    "us-cine-rle": (lambda: _compressed(equipment.us_cine(), RLELossless), RLELossless),
    "us-ybr-422-jpeg": (lambda: equipment.us_ybr_full_422_jpeg(), JPEGBaseline8Bit),
    "us-ybr-full": (lambda: equipment.us_ybr_full(), ExplicitVRLittleEndian),
    "us-palette": (lambda: equipment.us_palette(), ExplicitVRLittleEndian),
    "us-retired-class": (
        lambda: _of_class(equipment.us_single_rgb(), RETIRED_STORAGE_CLASSES["UltrasoundImageStorageRetired"]),
        ExplicitVRLittleEndian,
    ),
    "xa-j2k": (lambda: _compressed(equipment.xa_run(), JPEG2000Lossless), JPEG2000Lossless),
    "mg-implicit": (lambda: equipment.mg(), ImplicitVRLittleEndian),
    "nm-deflated": (lambda: equipment.nm(), DeflatedExplicitVRLittleEndian),
    "pt": (lambda: equipment.pt(), ExplicitVRLittleEndian),
    "ecg": (lambda: equipment.ecg(), ExplicitVRLittleEndian),
    "pdf": (lambda: equipment.pdf_document(), ExplicitVRLittleEndian),
    "video-h264": (lambda: equipment.endoscopy_video(), MPEG4HP41),
}


@pytest.mark.parametrize("case", CASES)
def test_a_vendor_instance_is_stored_as_received(receiver, ct_modality, case):
    build, syntax = CASES[case]
    ds = build()
    ds.file_meta.TransferSyntaxUID = syntax
    assert send(receiver, ct_modality.ae_title, ds, syntax).Status == SUCCESS
    instance = stored(ds)
    assert instance.transfer_syntax_uid == syntax
    assert instance.sop_class_uid == ds.SOPClassUID
    assert instance.number_of_frames == (int(ds.NumberOfFrames) if "NumberOfFrames" in ds else None)
    assert instance.series.modality == ds.Modality
    kept = dcmread(path_for(instance.storage_key))
    for keyword in ("PixelData", "WaveformSequence", "EncapsulatedDocument"):
        if keyword in ds:
            assert kept[keyword].value == ds[keyword].value, keyword


def test_a_ybr_full_422_jpeg_with_a_signature_and_trailing_padding_is_stored_from_storescu(
    receiver, ct_modality, tmp_path
):
    ds = equipment.with_trailing_elements(equipment.us_ybr_full_422_jpeg())
    path = tmp_path / "us.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.read_bytes().endswith(b"\0" * 256)  # the padding is the file's last element
    result = subprocess.run(
        ["storescu", "-aet", ct_modality.ae_title, "-aec", CALLED, "-xy", *receiver_args(receiver), str(path)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    kept = dcmread(path_for(stored(ds).storage_key))
    assert kept.PixelData == ds.PixelData
    # storescu sends the signature after the pixel data; it drops the trailing padding itself.
    assert kept.DigitalSignaturesSequence[0].Signature == b"\x5a" * 64


def receiver_args(receiver: tuple[str, int]) -> list[str]:
    return [receiver[0], str(receiver[1])]


@pytest.mark.parametrize("build", [equipment.us_ybr_full_422_jpeg, equipment.us_cine], ids=["jpeg", "native"])
def test_a_signature_and_trailing_padding_after_the_pixel_data_are_stored(receiver, ct_modality, build):
    ds = equipment.with_trailing_elements(build())
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    kept = dcmread(path_for(stored(ds).storage_key))
    assert kept.PixelData == ds.PixelData
    assert kept.DigitalSignaturesSequence[0].Signature == b"\x5a" * 64
    assert kept[0xFFFCFFFC].value == b"\0" * 256


# --- Encapsulated pixel data that is not well formed ---------------------------------


ITEM = b"\xfe\xff\x00\xe0"


def test_an_item_tag_that_is_not_an_item_is_refused(receiver, ct_modality):
    ds = equipment.with_trailing_elements(equipment.us_ybr_full_422_jpeg())
    payload = encode(ds)
    offset_table = payload.index(ITEM, payload.index(b"\xe0\x7f\x10\x00OB"))
    first_fragment = payload.index(ITEM, offset_table + 8)
    broken = payload[:first_fragment] + b"\xfe\xff\x11\xe0" + payload[first_fragment + 4 :]
    response = send_raw(receiver, ct_modality.ae_title, ds, broken, JPEGBaseline8Bit)
    refused(response, ds, "(FFFE,E011)")


def test_encapsulated_pixel_data_without_a_fragment_is_refused(receiver, ct_modality):
    ds = equipment.us_ybr_full_422_jpeg(frames=1)
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    equipment.encapsulated(ds)
    response = send_raw(receiver, ct_modality.ae_title, ds, encode(ds), JPEGBaseline8Bit)
    refused(response, ds, "no fragment")


def test_encapsulated_pixel_data_of_a_defined_length_is_refused(receiver, ct_modality):
    ds = equipment.us_ybr_full_422_jpeg()
    ds["PixelData"].is_undefined_length = False
    refused(send(receiver, ct_modality.ae_title, ds), ds, "defined length")


def test_encapsulated_pixel_data_cut_short_is_refused(receiver, ct_modality):
    ds = equipment.us_ybr_full_422_jpeg()
    response = send_raw(receiver, ct_modality.ae_title, ds, encode(ds)[:-500], JPEGBaseline8Bit)
    refused(response, ds, "truncated")


# --- Native pixel data whose length does not match ---------------------------------


def test_native_pixel_data_one_frame_short_is_refused(receiver, ct_modality):
    ds = equipment.us_cine(frames=8)
    ds.PixelData = ds.PixelData[: -48 * 64]
    refused(send(receiver, ct_modality.ae_title, ds), ds, "pixel data is 21504 bytes, not 24576")


def test_native_pixel_data_with_excess_padding_is_accepted(receiver, ct_modality):
    # PS3.5 8.1.1: older applications pad pixel data beyond the one pad byte, and
    # receivers should accept it (pydicom's MR_small_padded: 128 bytes more).
    ds = make_dataset()
    ds.PixelData = ds.PixelData + b"\0" * 64
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    assert dcmread(path_for(stored(ds).storage_key)).PixelData == ds.PixelData


def test_native_pixel_data_a_frame_longer_than_described_is_refused(receiver, ct_modality):
    ds = make_dataset()
    ds.PixelData = ds.PixelData * 2
    refused(send(receiver, ct_modality.ae_title, ds), ds, "not 8192")


def test_a_short_native_image_re_encoded_by_a_client_is_refused_not_archived_unviewable(receiver, ct_modality):
    ds = make_dataset(rows=64, columns=64)
    ds.PixelData = ds.PixelData[:6000]
    refused(send(receiver, ct_modality.ae_title, ds, ImplicitVRLittleEndian), ds, "pixel data is 6000 bytes")
    response = send(receiver, ct_modality.ae_title, make_dataset(patient_id="AFTER"))
    assert response.Status == SUCCESS


def test_a_dataset_not_encoded_in_its_transfer_syntax_is_refused(receiver, ct_modality):
    # Implicit VR on the wire in an explicit VR context (pydicom's SC_rgb_jpeg is such a
    # file): pydicom reads it anyway, dcmtk and the viewer's parser do not, so it was
    # archived and then shown by nothing.
    ds = make_dataset()
    response = send_raw(receiver, ct_modality.ae_title, ds, encode(ds, implicit=True), ExplicitVRLittleEndian)
    refused(response, ds, "encoded in implicit VR little endian")


def test_an_odd_length_padded_to_even_is_accepted(receiver, ct_modality):
    ds = equipment.us_cine(frames=1, rows=5, columns=5)
    assert len(ds.PixelData) == 25
    ds.PixelData = ds.PixelData + b"\0"
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS


def _single_bit(frames: int, rows: int, columns: int, data: bytes) -> Dataset:
    ds = make_dataset(
        sop_class_uid=MultiFrameSingleBitSecondaryCaptureImageStorage, modality="OT", rows=rows, columns=columns
    )
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.NumberOfFrames = frames
    ds.PixelData = data
    return ds


def test_bits_allocated_1_counts_packed_bits(receiver, ct_modality):
    # 3 frames of 7 x 7 bits: 147 bits, 19 bytes, sent as 20 with the pad byte.
    good = _single_bit(3, 7, 7, bytes(range(20)))
    assert send(receiver, ct_modality.ae_title, good).Status == SUCCESS
    # A byte per pixel, as if Bits Allocated were 8.
    wrong = _single_bit(3, 7, 7, bytes(148))
    refused(send(receiver, ct_modality.ae_title, wrong), wrong, "not 19")


def test_native_ybr_full_422_is_two_samples_a_pixel(receiver, ct_modality):
    ds = equipment.us_ybr_full()
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = bytes(48 * 64 * 2)
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    three = equipment.us_ybr_full()
    three.PhotometricInterpretation = "YBR_FULL_422"
    refused(send(receiver, ct_modality.ae_title, three), three, "not 6144")


def _parametric_map(values: np.ndarray) -> Dataset:
    ds = make_dataset(sop_class_uid=ParametricMapStorage, modality="MR", rows=8, columns=8)
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth", "PixelData", "BitsStored"):
        delattr(ds, keyword)
    for keyword in ("HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.NumberOfFrames = 2
    ds.FloatPixelData = values.astype("<f4").tobytes()
    return ds


def test_float_pixel_data_is_checked_at_four_bytes_a_sample(receiver, ct_modality):
    good = _parametric_map(np.linspace(0, 1, 128))
    assert send(receiver, ct_modality.ae_title, good).Status == SUCCESS
    short = _parametric_map(np.linspace(0, 1, 100))
    refused(send(receiver, ct_modality.ae_title, short), short, "pixel data is 400 bytes, not 512")


# --- The exam kind comes from the data --------------------------------------------


def test_ultrasound_from_the_ct_console_is_archived_and_viewable_but_opens_no_consult(
    receiver, ct_modality, technologist, settings
):
    settings.STUDY_STABLE_SECONDS = 0
    cine = equipment.us_cine()
    still = equipment.us_single_rgb(study_uid=cine.StudyInstanceUID)
    for ds in (cine, still):
        assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    sweep_stable_studies.delay()
    study = Study.objects.get(study_uid=cine.StudyInstanceUID)
    assert study.status == Study.Status.ARRIVED
    assert study.modality == ct_modality  # who sent it is still known
    assert not Consult.objects.exists()
    assert not LedgerEntry.objects.exists()
    client = login(technologist)
    instance = stored(cine)
    url = f"/dicomweb/studies/{study.study_uid}/series/{instance.series.series_uid}/instances/{cine.SOPInstanceUID}"
    assert client.get(f"{url}/frames/3/rendered").status_code == 200
    page = client.get(reverse("consults:facility", args=[ct_modality.facility.uuid]))
    assert "仅归档" in page.content.decode()
    # Once arrived it has a list of its own, with its viewer, and leaves the studies that
    # are still arriving or waiting for a consult.
    assert [s.study_uid for s in page.context["archived_studies"]] == [study.study_uid]
    assert page.context["pending_studies"] == []
    assert reverse("viewer:study", args=[study.study_uid]) in page.content.decode()


@pytest.mark.parametrize(
    ("builders", "kind"),
    [
        ((equipment.xa_run,), None),
        ((equipment.mg,), None),
        ((equipment.nm, equipment.pt), None),
        ((equipment.ecg, equipment.pdf_document), None),
        ((lambda **f: make_dataset(sop_class_uid=DigitalXRayImageStorageForPresentation, modality="DX", **f),), "DR"),
        ((make_dataset, lambda **f: make_dataset(sop_class_uid=ComprehensiveSRStorage, modality="SR", **f)), "CT"),
        # No Modality at all: the SOP class decides.
        ((lambda **f: make_dataset(modality="", **f),), "CT"),
    ],
    ids=["xa", "mg", "nm-pt", "ecg-pdf", "dx", "ct-with-dose-sr", "ct-class-without-modality"],
)
def test_the_kind_comes_from_modality_and_sop_class_not_the_console(receiver, ct_modality, settings, builders, kind):
    settings.STUDY_STABLE_SECONDS = 0
    study_uid = generate_uid()
    for build in builders:
        ds = build(study_uid=study_uid)
        if "PixelData" in ds and ds.SOPClassUID == ComprehensiveSRStorage:
            del ds.PixelData
        assert send(receiver, ct_modality.ae_title, ds, ExplicitVRLittleEndian).Status == SUCCESS
    sweep_stable_studies.delay()
    consult = Consult.objects.filter(study__study_uid=study_uid).first()
    assert (consult.kind if consult else None) == kind
    assert Study.objects.get(study_uid=study_uid).status == Study.Status.ARRIVED


def test_a_technologist_cannot_request_a_reading_of_an_ultrasound(receiver, ct_modality, technologist, settings):
    ds = equipment.us_cine()
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    client = login(technologist)
    response = client.post(reverse("consults:request", args=[ds.StudyInstanceUID]), {"body_parts": 1}, follow=True)
    assert "只远程诊断 CT 和 DR" in response.content.decode()
    assert not Consult.objects.exists()


# --- Shown: rendered, thumbnails, frames, bulk data --------------------------------


def _instance_url(ds: Dataset) -> str:
    instance = stored(ds)
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{instance.series.series_uid}/instances/{ds.SOPInstanceUID}"


def _halves_of(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(BytesIO(data)).convert("RGB")).astype(int)
    rows, columns = image.shape[:2]
    return image[rows // 2, columns // 4], image[rows // 2, 3 * columns // 4]


@pytest.mark.parametrize(
    "build",
    [
        equipment.us_single_rgb,
        lambda: equipment.us_single_rgb(planar=1),
        equipment.us_ybr_full,
        equipment.us_ybr_full_422_jpeg,
        equipment.us_palette,
    ],
    ids=["rgb", "rgb-planar", "ybr-full", "ybr-full-422-jpeg", "palette"],
)
def test_colour_is_rendered_in_its_colours(receiver, ct_modality, technologist, build):
    ds = build()
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    client = login(technologist)
    url = _instance_url(ds)
    for suffix in ("/rendered?accept=image/png", "/thumbnail?viewport=32,32&accept=image/png"):
        response = client.get(url + suffix)
        assert response.status_code == 200, response.content
        left, right = _halves_of(response.content)
        # JPEG and its chroma subsampling move colours by a few levels.
        assert np.abs(left - equipment.LEFT_RGB).max() <= 8, (suffix, left)
        assert np.abs(right - equipment.RIGHT_RGB).max() <= 8, (suffix, right)


def test_each_frame_of_a_cine_is_rendered_and_retrieved(receiver, ct_modality, technologist):
    ds = equipment.us_cine(frames=8)
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    client = login(technologist)
    url = _instance_url(ds)
    for frame in (1, 5, 8):
        response = client.get(f"{url}/frames/{frame}/rendered?accept=image/png")
        assert response.status_code == 200
        row = np.asarray(Image.open(BytesIO(response.content)))[24]
        assert int(np.argmax(row)) == (frame - 1) * 8
        raw = client.get(
            f"{url}/frames/{frame}", HTTP_ACCEPT='multipart/related; type="application/octet-stream"'
        ).content
        assert equipment.cine_frame(48, 64, frame - 1, 8).tobytes() in raw
    assert client.get(f"{url}/frames/9/rendered").status_code == 404
    series = stored(ds).series.series_uid
    assert client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{series}/thumbnail").status_code == 200


def test_jpeg_frames_of_a_colour_clip_come_as_stored(receiver, ct_modality, technologist):
    ds = equipment.us_ybr_full_422_jpeg(frames=3)
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    response = login(technologist).get(
        f"{_instance_url(ds)}/frames/2", HTTP_ACCEPT="multipart/related; type=image/jpeg"
    )
    assert response.status_code == 200
    fragments = list(generate_fragments(ds.PixelData))
    assert fragments[1] in response.content


def test_a_video_is_retrieved_whole_as_video_mp4_and_never_rendered(receiver, ct_modality, technologist):
    ds = equipment.endoscopy_video()
    stream = b"".join(generate_fragments(ds.PixelData))
    assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
    client = login(technologist)
    url = _instance_url(ds)
    bulk = client.get(f"{url}/bulkdata/7FE00010")
    assert bulk.status_code == 200
    assert "video/mp4" in bulk["Content-Type"]
    assert stream in bulk.content
    assert client.get(f"{url}/frames/1").status_code == 406
    assert client.get(f"{url}/rendered").status_code == 400
    whole = client.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"')
    assert whole.status_code == 200
    assert stream[:64] in b"".join(whole.streaming_content)


def test_waveform_and_document_metadata_are_served(receiver, ct_modality, technologist):
    client = login(technologist)
    for ds in (equipment.ecg(), equipment.pdf_document()):
        assert send(receiver, ct_modality.ae_title, ds).Status == SUCCESS
        response = client.get(f"{_instance_url(ds)}/metadata")
        assert response.status_code == 200
        assert response.json()[0]["00080016"]["Value"] == [ds.SOPClassUID]
