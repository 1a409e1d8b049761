"""Other vendors' files through STOW-RS and back: pydicom's own test files (deflated, big
endian, RLE, JPEG, JPEG 2000, an ECG, YBR_FULL_422, Japanese, Korean and GB18030 names),
each stored and served back byte for byte, its metadata valid DICOM JSON (PS3.18 F.2)."""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from django.test import Client
from PIL import Image
from pydicom import dcmread

from cloudpacs.dicomweb import rendering
from cloudpacs.dicomweb.multipart import OutPart, encode, new_boundary, read_parts
from cloudpacs.models import Instance
from cloudpacs.storage import part10_dataset_offset
from tests.dicomweb_support import token_for
from tests.factories import make_dataset

pytestmark = pytest.mark.django_db

FILES = Path(pydicom.data.__file__).parent / "test_files"
CHARSETS = Path(pydicom.data.__file__).parent / "charset_files"
VENDOR_FILES = [
    FILES / "image_dfl.dcm",  # Deflated Explicit VR Little Endian, empty Series/Instance Number
    FILES / "waveform_ecg.dcm",  # 12-lead ECG
    FILES / "SC_jpeg_no_color_transform.dcm",  # JPEG baseline, empty numbers
    FILES / "ExplVR_BigEnd.dcm",  # Explicit VR Big Endian
    FILES / "MR_small_RLE.dcm",
    FILES / "JPEG2000.dcm",
    FILES / "SC_ybr_full_422_uncompressed.dcm",
    FILES / "MR_small_padded.dcm",  # 128 bytes of excess padding after the pixels (PS3.5 8.1.1's note)
    FILES / "JPEG-lossy.dcm",  # 12-bit JPEG Extended, scan header of another process
    CHARSETS / "chrH32.dcm",  # ISO 2022 IR 13 / IR 87, Japanese
    CHARSETS / "chrI2.dcm",  # ISO 2022 IR 149, Korean
    CHARSETS / "chrX2.dcm",  # GB18030
]


@pytest.fixture
def api(technologist, ct_modality, dr_modality) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {token_for(technologist)}", HTTP_ACCEPT="*/*")


def stow(api: Client, *payloads: bytes):
    boundary = new_boundary()
    body = encode([OutPart("application/dicom", data=payload) for payload in payloads], boundary)
    return api.post(
        "/dicomweb/studies", body, content_type=f'multipart/related; type="application/dicom"; boundary={boundary}'
    )


def parts(response) -> list[bytes]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    boundary = re.search(r"boundary=([^;]+)", response["Content-Type"]).group(1).strip('"')
    found = []
    for part in read_parts(BytesIO(body), boundary):
        found.append(part.file.read())
        part.file.close()
    return found


def dataset_bytes(part10: bytes) -> bytes:
    offset = part10_dataset_offset(part10[: 64 * 1024])
    assert offset is not None
    return part10[offset:]


def instance_url(sop_instance_uid: str) -> str:
    item = Instance.objects.select_related("series__study").get(sop_instance_uid=sop_instance_uid)
    series = item.series
    return f"/dicomweb/studies/{series.study.study_uid}/series/{series.series_uid}/instances/{sop_instance_uid}"


def check_json(document: dict, where: str = "") -> None:
    """PS3.18 F.2: keys of eight hex digits, a vr, Value a non-empty list or absent (F.2.5),
    person names as component groups, numbers as numbers, no escape sequence in text."""
    for key, element in document.items():
        assert re.fullmatch(r"[0-9A-F]{8}", key), where + key
        assert "vr" in element, where + key
        if "Value" not in element:
            continue
        values = element["Value"]
        assert isinstance(values, list) and values, f"{where}{key}: {element}"
        for value in values:
            if element["vr"] == "SQ":
                check_json(value, f"{where}{key}>")
            elif element["vr"] == "PN":
                assert value is None or set(value) <= {"Alphabetic", "Ideographic", "Phonetic"}, value
            elif element["vr"] in ("DS", "IS", "US", "SS", "UL", "SL", "FL", "FD"):
                assert value is None or isinstance(value, int | float), f"{where}{key}: {value!r}"
            elif isinstance(value, str):
                assert "\x1b" not in value, f"{where}{key}: {value!r}"


@pytest.mark.parametrize("path", VENDOR_FILES, ids=lambda path: path.name)
def test_a_vendor_file_is_stored_and_served_back_as_it_came(api, path):
    sent = path.read_bytes()
    original = dcmread(path)
    response = stow(api, sent)
    assert response.status_code == 200, response.content
    url = instance_url(str(original.SOPInstanceUID))
    (served,) = parts(api.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"'))
    assert dataset_bytes(served) == dataset_bytes(sent)
    response = api.get(url + "/metadata")
    assert response.status_code == 200
    (document,) = response.json()
    check_json(document)
    name = original.get("PatientName")
    if name:
        groups = {"Alphabetic": name.alphabetic, "Ideographic": name.ideographic, "Phonetic": name.phonetic}
        assert document["00100010"]["Value"] == [{key: value for key, value in groups.items() if value}]


def test_a_ybr_full_422_image_s_frame_is_its_two_values_a_pixel(api):
    # Native YBR_FULL_422 holds two values a pixel (each pair shares Cb and Cr): the frame
    # was looked for at three a pixel, past the end of the file, and answered 404.
    path = FILES / "SC_ybr_full_422_uncompressed.dcm"
    original = dcmread(path)
    assert stow(api, path.read_bytes()).status_code == 200
    url = instance_url(str(original.SOPInstanceUID))
    response = api.get(url + "/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert response.status_code == 200
    (frame,) = parts(response)
    assert len(frame) == original.Rows * original.Columns * 2 == len(original.PixelData)
    assert frame == original.PixelData


def test_frames_that_cannot_be_decoded_are_406_and_still_served_as_stored(api, monkeypatch):
    path = FILES / "JPEG2000.dcm"
    original = dcmread(path)
    assert stow(api, path.read_bytes()).status_code == 200
    url = instance_url(str(original.SOPInstanceUID)) + "/frames/1"

    def no_decoder(*args, **kwargs):
        raise RuntimeError("Unable to decode as exceptions were raised by all available plugins")

    monkeypatch.setattr(rendering, "pixel_array", no_decoder)
    response = api.get(url, HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert response.status_code == 406
    assert b"transfer-syntax=*" in response.content
    as_stored = api.get(url, HTTP_ACCEPT='multipart/related; type="image/jp2"')
    assert as_stored.status_code == 200


def test_metadata_gives_empty_sequences_no_value_and_empty_numbers_null(api):
    ds = make_dataset(patient_id="EMPTY")
    ds.ReferencedStudySequence = []
    ds.add_new(0x00181050, "DS", ["1.5e-1", "", "-0.5"])  # Spatial Resolution
    ds.AcquisitionNumber = None
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert stow(api, buffer.getvalue()).status_code == 200
    (document,) = api.get(instance_url(str(ds.SOPInstanceUID)) + "/metadata").json()
    assert document["00081110"] == {"vr": "SQ"}
    assert document["00181050"] == {"vr": "DS", "Value": [0.15, None, -0.5]}
    assert document["00200012"] == {"vr": "IS"}
    check_json(document)


def test_a_deflated_instance_is_rendered_and_its_frame_served(api):
    # pydicom's pixel_array reads a deflated file without inflating it, and the frame map
    # read the pixel data's header at a position in the compressed stream: /rendered was
    # 400 "no Pixel Data" and /frames/1 404.
    path = FILES / "image_dfl.dcm"
    original = dcmread(path)
    assert stow(api, path.read_bytes()).status_code == 200
    url = instance_url(str(original.SOPInstanceUID))
    rendered = api.get(url + "/rendered", HTTP_ACCEPT="image/png")
    assert rendered.status_code == 200
    assert rendered["Content-Type"] == "image/png"
    response = api.get(url + "/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert response.status_code == 200
    (frame,) = parts(response)
    assert frame == original.PixelData


def frame_pixels(response) -> np.ndarray:
    (frame,) = parts(response)
    return np.frombuffer(frame, dtype="<u2")


def test_a_12_bit_jpeg_whose_scan_header_names_another_process_is_rendered_and_decoded(api):
    # pydicom's JPEG-lossy: JPEG Extended, 12 bits, its SOS with the spectral selection of
    # a progressive scan (T.81 B.2.3 fixes 0-63 for sequential DCT). libjpeg refused it
    # (/rendered 400, decoded frames 406); dcmtk decodes it with a warning. JPGExtended is
    # the same image with the header put right: the pixels must be those.
    path = FILES / "JPEG-lossy.dcm"
    original = dcmread(path)
    assert stow(api, path.read_bytes()).status_code == 200
    url = instance_url(str(original.SOPInstanceUID))
    rendered = api.get(url + "/rendered", HTTP_ACCEPT="image/png")
    assert rendered.status_code == 200
    assert Image.open(BytesIO(rendered.content)).size == (original.Columns, original.Rows)
    decoded = api.get(url + "/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert decoded.status_code == 200
    fixed = dcmread(FILES / "JPGExtended.dcm").pixel_array
    assert np.array_equal(frame_pixels(decoded).reshape(fixed.shape), fixed)


def test_a_jpeg_2000_frame_no_decoder_can_read_is_406_when_rendered_or_decoded(api):
    # pydicom's JPEG2000-embedded-sequence-delimiter: a parsing fixture whose codestream's
    # SIZ segment is garbage (a 250-byte "image" of 1024 x 256 at 16 bits, 0xDDE00100 wide),
    # which neither openjpeg nor GDCM reads. The request is sound, no image can be made:
    # 406 as for decoded frames (it was 400), and the frame itself as stored.
    path = FILES / "JPEG2000-embedded-sequence-delimiter.dcm"
    original = dcmread(path)
    assert stow(api, path.read_bytes()).status_code == 200
    url = instance_url(str(original.SOPInstanceUID))
    rendered = api.get(url + "/rendered")
    assert rendered.status_code == 406
    assert b"cannot decode" in rendered.content
    assert (
        api.get(url + "/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"').status_code == 406
    )
    (as_stored,) = parts(api.get(url + "/frames/1", HTTP_ACCEPT='multipart/related; type="image/jp2"'))
    assert as_stored.startswith(b"\xff\x4f\xff\x51")


def test_a_file_not_encoded_in_its_transfer_syntax_is_refused_and_nothing_is_kept(api, settings):
    # pydicom's SC_rgb_jpeg: JPEG Baseline in its meta, the dataset in implicit VR. It was
    # stored, dcmtk could not read it back and its frames were undecodable.
    path = FILES / "SC_rgb_jpeg.dcm"
    response = stow(api, path.read_bytes())
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert not Instance.objects.exists()
    assert not [found for found in Path(settings.STORAGE_ROOT).rglob("*") if found.is_file()]


def test_a_padded_image_is_rendered_as_its_attributes_describe_it(api):
    path = FILES / "MR_small_padded.dcm"
    original = dcmread(path)
    assert len(original.PixelData) == original.Rows * original.Columns * 2 + 128
    assert stow(api, path.read_bytes()).status_code == 200
    url = instance_url(str(original.SOPInstanceUID))
    assert api.get(url + "/rendered").status_code == 200
    (frame,) = parts(api.get(url + "/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"'))
    assert frame == original.PixelData[: original.Rows * original.Columns * 2]


def test_an_image_without_pixel_data_is_400_when_rendered_not_undecodable(api):
    # Rows and Columns but no Pixel Data (a header a console sent alone): the request asks
    # for what the instance does not have, unlike a codestream nothing decodes (406).
    ds = make_dataset(patient_id="NOPIXELS")
    del ds.PixelData
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert stow(api, buffer.getvalue()).status_code == 200
    response = api.get(instance_url(str(ds.SOPInstanceUID)) + "/rendered")
    assert response.status_code == 400
    assert b"no pixel data" in response.content


@pytest.mark.parametrize(
    "name", ["MR_small_bigendian.dcm", "rtdose_expb.dcm", "SC_rgb_small_odd_big_endian.dcm", "ExplVR_BigEnd.dcm"]
)
def test_a_big_endian_file_is_converted_to_little_endian_with_the_same_pixels(name):
    # WADO-RS with transfer-syntax=1.2.840.10008.1.2.1 for an instance stored big endian:
    # pydicom's save_as() refused to change the byte order (a server error), and would
    # not have swapped the OW/OF values (16-bit, 8-bit in OW, 32-bit dose).
    from cloudpacs.dicomweb.wado import converted_instance

    converted = dcmread(BytesIO(converted_instance(FILES / name, "1.2.840.10008.1.2.1")))
    original = dcmread(FILES / name)
    assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(converted.pixel_array, original.pixel_array)
    assert converted.SOPInstanceUID == original.SOPInstanceUID
