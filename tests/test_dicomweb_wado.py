"""WADO-RS and WADO-URI over HTTP with the dicomweb-client package: study, series and
instance retrieve as multipart/related application/dicom, metadata as DICOM JSON with
bulk data behind URIs, frames as stored and decompressed, and the audit of retrieves."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit

from cloudpacs.dicomweb.multipart import parse_media_type
from facilities.models import AuditEvent
from tests.dicomweb_support import client_for, ingest, token_for, voi_lut_dx

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _every_backend(storage_backend) -> None:
    """Every retrieve here runs against local disk and against the object store (before
    conftest's `archive` stores its files)."""


@pytest.fixture
def reader(live_server, radiologist, archive):
    return client_for(live_server, radiologist)


@pytest.fixture
def http(live_server, radiologist, archive):
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token_for(radiologist)}"
    session.base = live_server.url + "/dicomweb"  # type: ignore[attr-defined]
    return session


def test_it_retrieves_a_whole_study_as_the_files_were_received(reader, archive):
    study_uid, _, sop_uids = archive.studies["zhang_ct"]
    datasets = reader.retrieve_study(study_uid)
    assert [str(ds.SOPInstanceUID) for ds in datasets] == sop_uids
    first = datasets[0]
    assert first.PatientName.ideographic == "张^三"
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = archive.datasets["zhang_ct"]
    assert np.array_equal(first.pixel_array, original.pixel_array)


def test_it_retrieves_a_series_and_an_instance(reader, archive):
    study_uid, series_uid, sop_uids = archive.studies["zhang_ct"]
    assert len(reader.retrieve_series(study_uid, series_uid)) == 3
    one = reader.retrieve_instance(study_uid, series_uid, sop_uids[2])
    assert one.SOPInstanceUID == sop_uids[2]
    assert one.InstanceNumber == 3


def test_a_compressed_instance_comes_as_stored_or_decompressed_when_asked(reader, archive):
    study_uid, series_uid, sop_uid = archive.uids("wang_j2k")
    stored = reader.retrieve_instance(study_uid, series_uid, sop_uid)
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    plain = reader.retrieve_instance(
        study_uid, series_uid, sop_uid, media_types=(("application/dicom", ExplicitVRLittleEndian),)
    )
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(plain.pixel_array, stored.pixel_array)


def test_a_study_retrieve_streams_and_says_its_part_type(http, archive):
    study_uid = archive.studies["zhang_ct"][0]
    response = http.get(f"{http.base}/studies/{study_uid}", stream=True, timeout=10)
    media_type, params = parse_media_type(response.headers["Content-Type"])
    assert response.status_code == 200
    assert media_type == "multipart/related"
    assert params["type"] == "application/dicom"
    assert "Content-Length" not in response.headers
    assert response.raw.read().count(params["boundary"].encode()) == 4


def test_one_instance_comes_alone_as_application_dicom_and_a_study_does_not(http, archive):
    # PS3.18 Table 10.4.4-1: application/dicom without multipart/related is one object, for
    # an instance only; it was answered with a multipart body the client had not accepted.
    study_uid, series_uid, sop_uid = archive.uids("wang_j2k")
    url = f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    alone = http.get(url, headers={"Accept": "application/dicom"}, timeout=10)
    assert alone.status_code == 200
    media_type, params = parse_media_type(alone.headers["Content-Type"])
    assert (media_type, params["transfer-syntax"]) == ("application/dicom", JPEG2000Lossless)
    assert dcmread(BytesIO(alone.content)).SOPInstanceUID == sop_uid
    plain = http.get(
        url, headers={"Accept": f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"}, timeout=10
    )
    assert parse_media_type(plain.headers["Content-Type"])[0] == "application/dicom"
    assert dcmread(BytesIO(plain.content)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    study = f"{http.base}/studies/{study_uid}"
    assert http.get(study, headers={"Accept": "application/dicom"}, timeout=10).status_code == 406
    either = http.get(
        study, headers={"Accept": 'application/dicom, multipart/related; type="application/dicom"'}, timeout=10
    )
    assert parse_media_type(either.headers["Content-Type"])[0] == "multipart/related"


def test_each_retrieve_writes_one_audit_event(reader, archive):
    study_uid, series_uid, _sop_uid = archive.uids("zhang_ct")
    before = AuditEvent.objects.filter(action="cloudpacs.study.retrieved").count()
    reader.retrieve_study(study_uid)
    reader.retrieve_series(study_uid, series_uid)
    events = AuditEvent.objects.filter(action="cloudpacs.study.retrieved").order_by("at")
    assert events.count() == before + 2
    latest = list(events)[-2:]
    assert [event.object_id for event in latest] == [study_uid, study_uid]
    assert latest[0].detail["instances"] == 3
    assert latest[0].actor_name == "dr_li"


def test_metadata_is_dicom_json_read_from_the_files_with_pixel_data_behind_a_uri(reader, archive):
    study_uid, series_uid, sop_uids = archive.studies["zhang_ct"]
    study = reader.retrieve_study_metadata(study_uid)
    series = reader.retrieve_series_metadata(study_uid, series_uid)
    (instance,) = [reader.retrieve_instance_metadata(study_uid, series_uid, sop_uids[0])]
    assert len(study) == len(series) == 3
    assert instance["00100010"]["Value"] == [{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}]
    assert instance["00281050"]["Value"] == [40]
    pixel = instance["7FE00010"]
    assert pixel["vr"] == "OW"
    assert "InlineBinary" not in pixel
    assert pixel["BulkDataURI"].endswith(f"/instances/{sop_uids[0]}/bulkdata/7FE00010")
    assert not any(key.startswith("0002") for key in instance)


def test_the_pixel_data_bulk_uri_answers_with_the_pixel_data(http, archive):
    # Fetched with requests: dicomweb-client sends "Host: localhost" without the port on
    # non-streamed GETs, so absolute URIs it is given back name the wrong port.
    study_uid, series_uid, sop_uid = archive.uids("zhang_ct")
    url = f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata"
    (instance,) = http.get(url, timeout=10).json()
    response = http.get(instance["7FE00010"]["BulkDataURI"], timeout=10)
    media_type, params = parse_media_type(response.headers["Content-Type"])
    assert (media_type, params["type"]) == ("multipart/related", "application/octet-stream")
    body = response.content
    start = body.index(b"\r\n\r\n") + 4
    end = body.rindex(b"\r\n--" + params["boundary"].encode())
    assert body[start:end] == archive.datasets["zhang_ct"].PixelData


def test_frames_come_as_stored_for_uncompressed_data(reader, archive):
    study_uid, series_uid, sop_uid = archive.uids("zhang_ct")
    (frame,) = reader.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[1])
    assert frame == archive.datasets["zhang_ct"].PixelData


def test_each_frame_of_a_native_multiframe_instance_is_read_from_its_own_place(tmp_path):
    from cloudpacs.dicomweb import wado
    from tests.factories import make_dataset, write_dataset

    for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
        ds = make_dataset(rows=4, columns=3, NumberOfFrames=3, transfer_syntax_uid=syntax)
        pixels = np.arange(3 * 4 * 3, dtype=np.uint16).reshape(3, 4, 3) * 100
        ds.PixelData = pixels.tobytes()
        path = write_dataset(ds, tmp_path / f"{syntax}.dcm")
        assert wado.frames(path, [3, 1], decode=False) == [pixels[2].tobytes(), pixels[0].tobytes()]
        assert wado.frames(path, [2], decode=True) == [pixels[1].tobytes()]
        with pytest.raises(LookupError):
            wado.frames(path, [4], decode=False)


def test_single_bit_frames_that_do_not_end_on_a_byte_boundary_each_start_a_byte_of_their_own(tmp_path):
    # 3 frames of 5 x 5 bits, packed one after another (PS3.5 8.1.1): 75 bits in 10 bytes.
    # A frame is sent starting at a byte, its last byte's unused bits zero (PS3.18
    # 8.7.3.3.1); it was cut at whole bytes, so frames 2 and 3 began inside frame 1 and 2.
    from pydicom.uid import MultiFrameSingleBitSecondaryCaptureImageStorage

    from cloudpacs.dicomweb import wado
    from cloudpacs.dicomweb.rendering import RenderOptions, render
    from tests.factories import make_dataset, write_dataset

    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, size=(3, 5, 5), dtype=np.uint8)
    for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
        ds = make_dataset(
            sop_class_uid=MultiFrameSingleBitSecondaryCaptureImageStorage, rows=5, columns=5,
            transfer_syntax_uid=syntax, NumberOfFrames=3,
        )  # fmt: skip
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
        for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
            delattr(ds, keyword)
        ds.PixelData = np.packbits(bits.ravel(), bitorder="little").tobytes()
        path = write_dataset(ds, tmp_path / f"bits-{syntax}.dcm")
        expected = [np.packbits(frame.ravel(), bitorder="little").tobytes() for frame in bits]
        assert wado.frames(path, [2, 3, 1], decode=False) == [expected[1], expected[2], expected[0]]
        # And rendered: frame 2's pixels, not frame 1's bits from the second byte on.
        picture = render(path, 1, RenderOptions(media_type="image/png"))
        shown = np.asarray(Image.open(BytesIO(picture)))
        assert np.array_equal(shown > 127, bits[1] == 1)


def test_encapsulated_frames_are_found_by_the_rules_of_the_offset_table_and_kept_mapped(tmp_path):
    """PS3.5 A.4: one fragment per frame (with or without an offset table), several
    fragments per frame grouped by the Basic Offset Table, every fragment of a single
    frame; without a table, several fragments per frame are read the general way. The
    map is kept by storage key: a second read of the same key does not parse again."""
    from pydicom.encaps import encapsulate

    from cloudpacs.dicomweb import wado
    from tests.equipment import encapsulated
    from tests.factories import make_dataset, write_dataset

    parts = [bytes([index]) * (10 + index) for index in range(6)]  # even-length fragments below

    def stored(name: str, pixel_data: bytes, frames: int):
        ds = make_dataset(transfer_syntax_uid=JPEGBaseline8Bit, NumberOfFrames=frames)
        ds.PixelData = pixel_data
        encapsulated(ds)
        return write_dataset(ds, tmp_path / f"{name}.dcm")

    frames = [part + part[:1] * (len(part) % 2) for part in parts[:3]]
    for has_bot in (False, True):
        path = stored(f"one-each-{has_bot}", encapsulate(frames, has_bot=has_bot), 3)
        assert wado.frames(path, [3, 1], decode=False) == [frames[2], frames[0]]
    # Two fragments per frame, grouped by the table.
    path = stored("grouped", encapsulate(frames, fragments_per_frame=2, has_bot=True), 3)
    assert wado.frames(path, [2, 3], decode=False, cache_key="grouped") == [frames[1], frames[2]]
    with open(path, "rb") as stream:
        found = wado.frame_map(stream)
    assert isinstance(found, wado.FrameMap) and [len(pieces) for pieces in found.pieces] == [2, 2, 2]
    # A single frame in several fragments.
    path = stored("single", encapsulate([frames[0] + frames[1]], fragments_per_frame=2, has_bot=False), 1)
    assert wado.frames(path, [1], decode=False) == [frames[0] + frames[1]]
    # Several fragments per frame and no table: not mapped here.
    path = stored("untold", encapsulate(frames, fragments_per_frame=2, has_bot=False), 3)
    with open(path, "rb") as stream:
        assert wado.frame_map(stream) is wado.NOT_MAPPABLE
    # A fragment whose item tag is damaged is not mapped either; a truncated file and a
    # frame outside the instance are a LookupError (the view's 404).
    data = Path(stored("damaged", encapsulate(frames, has_bot=False), 3)).read_bytes()
    second = data.index(b"\xfe\xff\x00\xe0" + (12).to_bytes(4, "little"))
    (tmp_path / "damaged.dcm").write_bytes(data[:second] + b"\x00\x00" + data[second + 2 :])
    with open(tmp_path / "damaged.dcm", "rb") as stream:
        assert wado.frame_map(stream) is wado.NOT_MAPPABLE
    (tmp_path / "cut.dcm").write_bytes(data[:-20])
    with pytest.raises(LookupError):
        wado.frames(tmp_path / "cut.dcm", [3], decode=False)
    with pytest.raises(LookupError):
        wado.frames(stored("four", encapsulate(frames, has_bot=False), 3), [4], decode=False)
    # Kept by key: the same key answers from the map without reading the header again.
    wado.frames(stored("kept", encapsulate(frames, has_bot=False), 3), [1], decode=False, cache_key="kept-key")
    assert isinstance(wado._FRAME_MAPS.get("kept-key"), wado.FrameMap)


def test_compressed_frames_come_as_stored_or_decompressed_as_asked(reader, archive, http):
    study_uid, series_uid, sop_uid = archive.uids("wang_j2k")
    stored = reader.retrieve_instance_frames(
        study_uid, series_uid, sop_uid, frame_numbers=[1, 2], media_types=(("image/jp2", JPEG2000Lossless),)
    )
    assert len(stored) == 2
    assert stored[0][:4] == b"\xff\x4f\xff\x51"  # a JPEG 2000 codestream starts with SOC, SIZ
    decoded = reader.retrieve_instance_frames(
        study_uid,
        series_uid,
        sop_uid,
        frame_numbers=[1, 2],
        media_types=(("application/octet-stream", ExplicitVRLittleEndian),),
    )
    expected = np.stack(
        [(np.arange(64 * 64).reshape(64, 64) * 3) % 4096, 4095 - (np.arange(64 * 64).reshape(64, 64) * 3) % 4096]
    )
    assert np.array_equal(np.frombuffer(decoded[0], dtype="<u2").reshape(64, 64), expected[0])
    assert np.array_equal(np.frombuffer(decoded[1], dtype="<u2").reshape(64, 64), expected[1])
    # What the Cornerstone image loader asks for: any transfer syntax, as stored.
    response = http.get(
        f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/2",
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
        timeout=10,
    )
    assert response.status_code == 200
    assert f"transfer-syntax={JPEG2000Lossless}" in response.headers["Content-Type"]
    assert "image/jp2" in response.headers["Content-Type"]


def test_big_endian_frames_come_little_endian_unless_asked_for_as_stored(
    live_server, technologist, archive, ct_modality, tmp_path
):
    # They were sent as stored (big endian, labelled so) to a client that asked for
    # application/octet-stream with no transfer syntax, which means Explicit VR Little Endian.
    ds = dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    item = ingest(ds, ct_modality, tmp_path)
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token_for(technologist)}"
    base = f"{live_server.url}/dicomweb/studies/{item.series.study.study_uid}"
    url = f"{base}/series/{item.series.series_uid}/instances/{item.sop_instance_uid}"
    expected = ds.pixel_array.astype(ds.pixel_array.dtype.newbyteorder("<")).tobytes()
    for accept in ('multipart/related; type="application/octet-stream"', "*/*"):
        response = http.get(f"{url}/frames/1", headers={"Accept": accept}, timeout=10)
        params = parse_media_type(response.headers["Content-Type"])[1]
        assert params["transfer-syntax"] == ExplicitVRLittleEndian, accept
        assert expected in response.content, accept
    stored = http.get(
        f"{url}/frames/1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
        timeout=10,
    )
    assert parse_media_type(stored.headers["Content-Type"])[1]["transfer-syntax"] == "1.2.840.10008.1.2.2"
    assert bytes(ds.PixelData) in stored.content


def test_frames_refuse_an_encoding_they_cannot_give_and_a_frame_that_does_not_exist(http, archive):
    study_uid, series_uid, sop_uid = archive.uids("wang_j2k")
    url = f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/1"
    assert http.get(url, headers={"Accept": 'multipart/related; type="image/jpeg"'}, timeout=10).status_code == 406
    assert http.get(url.replace("/frames/1", "/frames/3"), timeout=10).status_code == 404
    assert http.get(url.replace("/frames/1", "/frames/0"), timeout=10).status_code == 400


def multipart_parts(response) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of a multipart/related answer, found by the boundary."""
    boundary = parse_media_type(response.headers["Content-Type"])[1]["boundary"].encode()
    parts = []
    for chunk in response.content.split(b"--" + boundary)[1:-1]:
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers, body.removesuffix(b"\r\n")))
    return parts


def test_the_frames_of_several_instances_come_in_one_answer_each_part_named_by_its_url(http, archive):
    study_uid, series_uid, sop_uids = archive.studies["zhang_ct"]
    asked = [sop_uids[2], sop_uids[0], sop_uids[1]]
    accept = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
    response = http.get(
        f"{http.base}/studies/{study_uid}/series/{series_uid}/frames",
        params={"instances": ",".join(asked)},
        headers=accept,
        timeout=10,
    )
    assert response.status_code == 200
    assert parse_media_type(response.headers["Content-Type"])[0] == "multipart/related"
    assert response.headers["Cache-Control"] == "private, max-age=60"
    parts = multipart_parts(response)
    # In the order asked, each as its own frame request answers, with its URL and length.
    assert [headers["Content-Location"] for headers, _ in parts] == [
        f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop}/frames/1" for sop in asked
    ]
    for (headers, body), sop in zip(parts, asked, strict=True):
        single = http.get(
            f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop}/frames/1", headers=accept, timeout=10
        )
        ((single_headers, single_body),) = multipart_parts(single)
        assert body == single_body
        assert int(headers["Content-Length"]) == len(body) == len(single_body)
        assert headers["Content-Type"] == single_headers["Content-Type"]
        assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["Content-Type"]


def test_the_frames_of_several_instances_refuse_a_bad_list_and_an_instance_not_in_the_series(http, archive):
    study_uid, series_uid, sop_uids = archive.studies["zhang_ct"]
    url = f"{http.base}/studies/{study_uid}/series/{series_uid}/frames"
    assert http.get(url, timeout=10).status_code == 400
    assert http.get(url, params={"instances": f"{sop_uids[0]},{sop_uids[0]}"}, timeout=10).status_code == 400
    assert (
        http.get(
            url, params={"instances": ",".join(["1.2.3"] * 1 + [f"1.2.{n}" for n in range(64)])}, timeout=10
        ).status_code
        == 400
    )
    # One UID the series does not hold (another study's image): nothing is sent.
    other = archive.studies["li_dx"][2][0]
    assert http.get(url, params={"instances": f"{sop_uids[0]},{other}"}, timeout=10).status_code == 404


def test_an_unknown_study_series_or_instance_is_404(reader, http, archive):
    study_uid, series_uid, _sop_uid = archive.uids("zhang_ct")
    for path in (
        "/studies/1.2.3.4",
        f"/studies/{study_uid}/series/1.2.3",
        f"/studies/{study_uid}/series/{series_uid}/instances/1.2.3",
        f"/studies/{study_uid}/series/{archive.studies['li_dx'][1]}",
    ):
        assert http.get(http.base + path, timeout=10).status_code == 404, path


def test_wado_uri_gives_the_file_or_a_jpeg(http, archive, live_server):
    study_uid, series_uid, sop_uid = archive.uids("li_dx")
    params = {"requestType": "WADO", "studyUID": study_uid, "seriesUID": series_uid, "objectUID": sop_uid}
    dicom = http.get(f"{http.base}/wado", params={**params, "contentType": "application/dicom"}, timeout=10)
    assert dicom.status_code == 200
    assert dicom.headers["Content-Type"] == "application/dicom"
    assert dcmread(BytesIO(dicom.content)).SOPInstanceUID == sop_uid
    jpeg = http.get(f"{http.base}/wado", params={**params, "rows": "100"}, timeout=10)
    assert jpeg.status_code == 200
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    assert jpeg.content[:2] == b"\xff\xd8"
    assert http.get(f"{http.base}/wado", params={**params, "requestType": "X"}, timeout=10).status_code == 400
    assert AuditEvent.objects.filter(action="cloudpacs.study.retrieved", detail__via="wado-uri").count() == 1


def test_nested_binary_values_stay_inline_and_top_level_ones_resolve(radiologist, archive, tmp_path):
    from django.test import Client

    from consults.services import open_consult_for_study

    ds = voi_lut_dx(patient_id="P0200")
    lut = ds.VOILUTSequence[0]
    lut["LUTData"].VR = "OW"
    lut.LUTData = np.asarray(lut.LUTData, dtype="<u2").tobytes()
    ds.add_new(0x00420011, "OB", b"\x01\x02" * 5000)
    instance = ingest(ds, archive.dr, tmp_path / "nested")
    open_consult_for_study(instance.series.study)  # what makes it a radiologist's to read
    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(radiologist)}", HTTP_ACCEPT="*/*")
    base = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{instance.sop_instance_uid}"
    )
    (metadata,) = client.get(base + "/metadata").json()
    item = metadata["00283010"]["Value"][0]
    assert "InlineBinary" in item["00283006"]
    assert metadata["00420011"]["BulkDataURI"].endswith("/bulkdata/00420011")
    response = client.get(base + "/bulkdata/00420011")
    assert response.status_code == 200
    assert b"\x01\x02" * 5000 in response.content


OCTET_PARTS = {"Accept": 'multipart/related; type="application/octet-stream"'}


def test_an_instance_asked_for_as_octet_stream_comes_as_its_bulk_data_named_by_its_uris(http, archive):
    # PS3.18 10.4.4: the request is "equivalent to requesting the corresponding Bulkdata
    # Resource"; each part's Content-Location is the BulkDataURI of the metadata (10.4.3.3.5).
    study_uid, series_uid, sop_uid = archive.uids("zhang_ct")
    url = f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    (metadata,) = http.get(f"{url}/metadata", timeout=10).json()
    uris = sorted(element["BulkDataURI"] for element in metadata.values() if "BulkDataURI" in element)
    response = http.get(url, headers=OCTET_PARTS, timeout=10)
    assert response.status_code == 200
    media_type, params = parse_media_type(response.headers["Content-Type"])
    assert (media_type, params["type"]) == ("multipart/related", "application/octet-stream")
    parts = multipart_parts(response)
    assert sorted(headers["Content-Location"] for headers, _ in parts) == uris
    pixel = next(body for headers, body in parts if headers["Content-Location"].endswith("/bulkdata/7FE00010"))
    assert pixel == archive.datasets["zhang_ct"].PixelData
    assert all(headers["Content-Type"].startswith("application/octet-stream") for headers, _ in parts)
    assert AuditEvent.objects.filter(action="cloudpacs.study.retrieved", detail__via="instance-bulkdata").count() == 1


def test_a_series_and_a_study_asked_for_as_octet_stream_give_every_instance_s_pixel_data(http, archive):
    study_uid, series_uid, sop_uids = archive.studies["zhang_ct"]
    for url in (f"{http.base}/studies/{study_uid}", f"{http.base}/studies/{study_uid}/series/{series_uid}"):
        response = http.get(url, headers=OCTET_PARTS, timeout=10)
        assert response.status_code == 200, url
        locations = [headers["Content-Location"] for headers, _ in multipart_parts(response)]
        pixel = [location for location in locations if location.endswith("/bulkdata/7FE00010")]
        assert pixel == [
            f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop}/bulkdata/7FE00010" for sop in sop_uids
        ]
    # application/dicom, the default, still wins when the client prefers it or gives */*.
    for accept in (
        "*/*",
        'multipart/related; type="application/dicom", multipart/related; type=application/octet-stream;q=0.5',
    ):
        response = http.get(f"{http.base}/studies/{study_uid}", headers={"Accept": accept}, timeout=10)
        assert parse_media_type(response.headers["Content-Type"])[1]["type"] == "application/dicom"


def test_compressed_pixel_data_asked_for_as_octet_stream_comes_uncompressed(http, archive):
    study_uid, series_uid, sop_uid = archive.uids("wang_j2k")
    url = f"{http.base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    parts = multipart_parts(http.get(url, headers=OCTET_PARTS, timeout=10))
    pixel = next(body for headers, body in parts if headers["Content-Location"].endswith("/bulkdata/7FE00010"))
    stored = archive.datasets["wang_j2k"]
    assert pixel == stored.pixel_array.astype(stored.pixel_array.dtype.newbyteorder("<")).tobytes()


def test_a_retrieve_without_an_accept_header_is_406_and_with_any_media_type_the_default(http, archive):
    # PS3.18 8.7.7: "If the origin server receives a request without an Accept Header
    # Field, but that might have a response payload, it shall return a 406".
    study_uid, series_uid, sop_uid = archive.uids("zhang_ct")
    instance = f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
    for path in (
        "/studies",
        f"/studies/{study_uid}",
        f"/studies/{study_uid}/metadata",
        f"/studies/{study_uid}/series",
        instance,
        f"{instance}/frames/1",
        f"{instance}/bulkdata/7FE00010",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
    ):
        bare = http.get(http.base + path, headers={"Accept": None}, timeout=10)
        assert bare.status_code == 406, path
        assert "Accept" in bare.text
        assert http.head(http.base + path, headers={"Accept": None}, timeout=10).status_code == 406, path
        assert http.get(http.base + path, headers={"Accept": "*/*"}, timeout=10).status_code == 200, path
    # WADO-URI names its media type by contentType (PS3.18 9): no Accept is needed.
    params = {"requestType": "WADO", "studyUID": study_uid, "seriesUID": series_uid, "objectUID": sop_uid}
    assert http.get(f"{http.base}/wado", params=params, headers={"Accept": None}, timeout=10).status_code == 200
    # A refused request read nothing and is not audited as a retrieve: only the */* one is.
    assert AuditEvent.objects.filter(action="cloudpacs.study.retrieved", detail__via="study").count() == 1
