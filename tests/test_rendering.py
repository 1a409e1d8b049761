"""Server-side rendering: /rendered and thumbnails over HTTP (decoded with Pillow), the
VOI LUT Sequence of a DX against a pydicom reference, MONOCHROME1, windows, viewports,
compressed frames, and the Accept headers browsers send."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from django.test import Client
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cloudpacs.dicomweb import rendering
from cloudpacs.dicomweb.multipart import parse_media_type, read_parts
from cloudpacs.dicomweb.rendering import RenderOptions, Window
from tests.dicomweb_support import Archive, build_archive, client_for, token_for, voi_lut_dx
from tests.factories import make_dataset

BROWSER_IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


@pytest.fixture
def storage_backend(request) -> str:
    """Local disk, unless a test asks for the object store too (indirect parametrize)."""
    backend = getattr(request, "param", "local")
    if backend == "s3":
        request.getfixturevalue("object_store")
    return str(backend)


BOTH_BACKENDS = pytest.mark.parametrize("storage_backend", ["local", "s3"], indirect=True)


@pytest.fixture
def archive(storage_backend, township, other_township, ct_modality, dr_modality, tmp_path) -> Archive:
    return build_archive(township, other_township, ct_modality, dr_modality, tmp_path / "in")


@pytest.fixture
def client(radiologist, archive) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {token_for(radiologist)}", HTTP_ACCEPT="*/*")


def url(archive: Archive, name: str, suffix: str) -> str:
    st, se, sop = archive.uids(name)
    return f"/dicomweb/studies/{st}/series/{se}/instances/{sop}{suffix}"


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(data)))


def pydicom_reference(ds) -> np.ndarray:
    """What the VOI LUT says, by pydicom: Modality LUT, then VOI LUT, scaled to 8 bits
    over the LUT's output range."""
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    top = max(ds.VOILUTSequence[0].LUTData)
    return np.rint(values.astype(np.float64) * 255.0 / top).astype(np.uint8)


@pytest.mark.django_db(transaction=True)
def test_rendered_and_thumbnails_come_back_as_images_through_dicomweb_client(live_server, radiologist, archive):
    dicomweb = client_for(live_server, radiologist)
    st, se, sop = archive.uids("zhang_ct")
    jpeg = dicomweb.retrieve_instance_rendered(st, se, sop)
    image = Image.open(BytesIO(jpeg))
    assert image.format == "JPEG"
    assert image.size == (64, 64)
    assert np.asarray(image).std() > 10
    png = dicomweb.retrieve_instance_rendered(st, se, sop, media_types=("image/png",), params={"viewport": "128,128"})
    image = Image.open(BytesIO(png))
    assert (image.format, image.size) == ("PNG", (128, 128))
    frame = dicomweb.retrieve_instance_frames_rendered(st, se, sop, frame_numbers=[1])
    assert Image.open(BytesIO(frame)).size == (64, 64)


@pytest.mark.django_db(transaction=True)
def test_a_study_and_a_series_render_as_the_image_their_thumbnail_shows(live_server, radiologist, archive):
    # PS3.18 Table 10.3-2 makes the rendered study and series mandatory; they were 404.
    dicomweb = client_for(live_server, radiologist)
    st, se, _sop = archive.uids("zhang_ct")
    middle = archive.studies["zhang_ct"][2][1]
    expected = decode(dicomweb.retrieve_instance_rendered(st, se, middle, media_types=("image/png",)))
    series = dicomweb.retrieve_series_rendered(st, se, media_types=("image/png",))
    assert np.array_equal(decode(series), expected)
    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(radiologist)}", HTTP_ACCEPT="*/*")
    study = client.get(f"/dicomweb/studies/{st}/rendered", {"viewport": "32,32"}, HTTP_ACCEPT="image/jpeg")
    assert study.status_code == 200
    assert study["Content-Type"] == "image/jpeg"
    assert Image.open(BytesIO(study.content)).size == (32, 32)
    assert client.get(f"/dicomweb/studies/{st}/rendered", HTTP_ACCEPT="image/gif").status_code == 406
    # Asked for as parts, every image of the series comes, each rendered, in order.
    response = client.get(
        f"/dicomweb/studies/{st}/series/{se}/rendered", HTTP_ACCEPT='multipart/related; type="image/png"'
    )
    media_type, params = parse_media_type(response["Content-Type"])
    assert (media_type, params["type"]) == ("multipart/related", "image/png")
    parts = list(read_parts(BytesIO(b"".join(response.streaming_content)), params["boundary"]))
    assert [part.content_type for part in parts] == ["image/png"] * 3
    assert [part.headers["content-location"].split("/")[-2] for part in parts] == archive.studies["zhang_ct"][2]
    assert np.array_equal(decode(parts[1].file.read()), expected)


@BOTH_BACKENDS
def test_a_dx_with_a_voi_lut_renders_like_the_pydicom_reference(client, archive):
    response = client.get(url(archive, "li_dx", "/rendered"), HTTP_ACCEPT="image/png")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    rendered = decode(response.content).astype(int)
    reference = pydicom_reference(archive.datasets["li_dx"]).astype(int)
    assert rendered.shape == reference.shape == (200, 256)
    assert np.abs(rendered - reference).max() <= 1
    # The dataset's own window (3000/200) would give a different picture: the LUT won.
    windowed = rendering.windowed(archive.datasets["li_dx"].pixel_array, Window(3000, 200))
    assert np.abs(rendered - np.rint(windowed)).mean() > 40


def test_an_explicit_window_overrides_the_voi_lut(client, archive):
    response = client.get(url(archive, "li_dx", "/rendered"), {"window": "2048,4096,linear"}, HTTP_ACCEPT="image/png")
    rendered = decode(response.content).astype(int)
    pixels = archive.datasets["li_dx"].pixel_array.astype(float)
    expected = np.clip(((pixels - 2047.5) / 4095 + 0.5) * 255, 0, 255)
    assert np.abs(rendered - np.rint(expected)).max() <= 1


def test_monochrome1_is_inverted():
    ds = make_dataset(rows=16, columns=16)
    arr = ds.pixel_array
    normal = np.asarray(rendering.render_array(arr, ds, RenderOptions(media_type="image/png"))).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = np.asarray(rendering.render_array(arr, ds, RenderOptions(media_type="image/png"))).astype(int)
    assert np.array_equal(normal + inverted, np.full_like(normal, 255))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize(
    "window", [None, Window(40, 400), Window(40, 400, "SIGMOID"), Window(100, 2, "LINEAR_EXACT"), Window(0, 1)]
)
@pytest.mark.parametrize("stored", [(np.uint16, 0, 4096), (np.int16, -2000, 3000), (np.uint8, 0, 256)])
def test_an_integer_image_through_its_table_of_stored_values_is_the_pixel_by_pixel_pipeline(
    stored, window, photometric
):
    dtype, low, high = stored
    pixels = np.random.default_rng(7).integers(low, high, (64, 64)).astype(dtype)
    for keeps_its_window in (True, False):
        ds = make_dataset(rows=64, columns=64)
        ds.PhotometricInterpretation = photometric
        if not keeps_its_window:  # the image's own range then decides the window
            del ds.WindowCenter, ds.WindowWidth
        by_pixel = rendering._display(apply_modality_lut(pixels, ds), ds, window)
        assert np.array_equal(rendering.eight_bits(pixels, ds, window), by_pixel)


def test_a_large_dx_is_reduced_before_its_luts_and_rendered_at_the_viewport(client, technologist, tmp_path):
    ds = voi_lut_dx()
    big = np.tile(ds.pixel_array, (15, 12))[:3000, :3000]
    ds.Rows, ds.Columns = big.shape
    reduced = rendering.reduce(big, (512, 512))
    assert reduced.shape == (600, 600)
    assert reduced.dtype == big.dtype
    image = rendering.render_array(big, ds, RenderOptions(viewport=(512, 512)))
    assert image.size == (512, 512)
    wide = rendering.render_array(big[:1500, :], ds, RenderOptions(viewport=(512, 512)))
    assert wide.size == (512, 256)


def test_a_browsers_image_accept_header_gets_a_jpeg(client, archive):
    response = client.get(url(archive, "zhang_ct", "/rendered"), HTTP_ACCEPT=BROWSER_IMAGE_ACCEPT)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert decode(response.content).shape == (64, 64)


def test_png_is_given_when_preferred_and_406_when_nothing_acceptable_is_offered(client, archive):
    target = url(archive, "zhang_ct", "/rendered")
    assert client.get(target, HTTP_ACCEPT="image/png, image/jpeg;q=0.5")["Content-Type"] == "image/png"
    assert client.get(target, {"accept": "image/png"})["Content-Type"] == "image/png"
    assert client.get(target, HTTP_ACCEPT="image/webp").status_code == 406
    assert client.get(target, HTTP_ACCEPT="application/dicom").status_code == 406


def test_window_viewport_and_quality_are_honoured_and_bad_values_refused(client, archive):
    target = url(archive, "zhang_ct", "/rendered")
    narrow = decode(client.get(target, {"window": "-1000,100"}).content)
    wide = decode(client.get(target, {"window": "1000,4000"}).content)
    assert not np.array_equal(narrow, wide)
    assert decode(client.get(target, {"viewport": "32,16"}).content).shape == (16, 16)
    small = client.get(target, {"quality": "10", "viewport": "256,256"}).content
    large = client.get(target, {"quality": "95", "viewport": "256,256"}).content
    assert len(small) < len(large)
    for bad in (
        {"window": "40"},
        {"window": "40,-1"},
        {"window": "40,400,cubic"},
        {"viewport": "0,10"},
        {"quality": "0"},
    ):
        assert client.get(target, bad).status_code == 400, bad


@BOTH_BACKENDS
def test_thumbnails_are_small_images_of_the_study_series_and_instance(client, archive):
    st, se, _sop = archive.uids("li_dx")
    for target in (
        f"/dicomweb/studies/{st}/thumbnail",
        f"/dicomweb/studies/{st}/series/{se}/thumbnail",
        url(archive, "li_dx", "/thumbnail"),
        url(archive, "li_dx", "/frames/1/thumbnail"),
    ):
        response = client.get(target, HTTP_ACCEPT=BROWSER_IMAGE_ACCEPT)
        assert response.status_code == 200, target
        pixels = decode(response.content)
        assert pixels.shape == (100, 128), target
        assert pixels.std() > 10, target
    assert decode(client.get(f"/dicomweb/studies/{st}/thumbnail", {"viewport": "64,64"}).content).shape == (50, 64)


@BOTH_BACKENDS
def test_compressed_frames_render_each_frame(client, archive):
    # A window over the whole range (stored 0..4095 are -1024..3071 HU).
    whole = {"window": "1024,4096"}
    first = decode(client.get(url(archive, "wang_j2k", "/frames/1/rendered"), whole, HTTP_ACCEPT="image/png").content)
    second = decode(client.get(url(archive, "wang_j2k", "/frames/2/rendered"), whole, HTTP_ACCEPT="image/png").content)
    assert first.shape == second.shape == (64, 64)
    assert first.std() > 10
    # The second frame is the first one's negative.
    assert np.corrcoef(first.ravel(), second.ravel())[0, 1] < -0.99
    assert client.get(url(archive, "wang_j2k", "/frames/3/rendered")).status_code == 404
