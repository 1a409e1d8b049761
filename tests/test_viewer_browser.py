"""The viewer in a real headless Chromium over the platform's own DICOMweb: a CT study is
opened, scrolled and windowed, and a DX with a VOI LUT renders as pydicom says it should.
What the reader sees is read back from the viewport's canvas at the centres of blocks of
constant value, so that interpolation at the edges does not matter."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

from cloudpacs.models import Study
from cloudpacs.services import ingest_instance
from facilities.models import ExamKind, Modality, User
from tests.browser import VIEWER_ENTRY, choose, press, session_context, watched_page
from tests.factories import make_dataset, make_facility, make_modality, make_user, write_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CT_SLICES = 4
CT_SIZE = 128
CT_BLOCK = 32
DX_SIZE = 256
DX_BLOCK = 32
# Gray levels may differ from the formula by rounding and texture sampling.
TOLERANCE = 3


def ct_hounsfield(slice_number: int) -> np.ndarray:
    """Sixteen blocks from -1000 HU up in steps of 160, the whole slice raised 60 HU per
    slice so that every slice looks different under any window."""
    rows, columns = np.mgrid[0:CT_SIZE, 0:CT_SIZE]
    block = (rows // CT_BLOCK) * (CT_SIZE // CT_BLOCK) + columns // CT_BLOCK
    return block * 160 - 1000 + slice_number * 60


def block_centres(size: int, block: int) -> list[tuple[int, int]]:
    return [
        (column + block // 2, row + block // 2) for row in range(0, size, block) for column in range(0, size, block)
    ]


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, to 8-bit gray."""
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(scaled, 0, 255)


def ingest(ds: Dataset, tmp_path: Path, modality) -> None:
    path = write_dataset(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    ingest_instance(
        path,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        modality=modality,
    )


# Two VOI LUTs: a short one that the metadata carries inline (base64), and a full 12-bit
# one that it gives behind a BulkDataURI. The short one starts at 1536, so the values
# below and above its range show its first and last entries.
VOI_LUTS = {"inline": (1024, 1536), "bulk": (4096, 0)}


def make_dx_with_voi_lut(entries: int, first_mapped: int) -> Dataset:
    """A 256x256 DX of 64 constant blocks over 0..4032 whose VOI LUT is a square-root curve,
    and whose window (if it were used instead) would show something else."""
    rows, columns = np.mgrid[0:DX_SIZE, 0:DX_SIZE]
    stored = ((rows // DX_BLOCK) * (DX_SIZE // DX_BLOCK) + columns // DX_BLOCK) * 64
    ds = make_dataset(
        sop_class_uid=DigitalXRayImageStorageForPresentation,
        modality="DX",
        rows=DX_SIZE,
        columns=DX_SIZE,
        patient_id="P300",
        patient_name="Zhao^Liu",
    )
    del ds.RescaleIntercept
    del ds.RescaleSlope
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.WindowCenter = 3000
    ds.WindowWidth = 1000
    item = Dataset()
    item.LUTDescriptor = [entries, first_mapped, 16]
    item.LUTExplanation = "SQRT"
    curve = 65535 * np.sqrt(np.arange(entries) / (entries - 1))
    item.add_new("LUTData", "OW", curve.astype("<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
    return ds


@pytest.fixture
def storage_backend(request) -> str:
    """Local disk, unless a test asks for the object store too (indirect parametrize): the
    whole module twice would double the slowest part of the suite."""
    backend = getattr(request, "param", "local")
    if backend == "s3":
        request.getfixturevalue("object_store")
    return str(backend)


BOTH_BACKENDS = pytest.mark.parametrize("storage_backend", ["local", "s3"], indirect=True)


@pytest.fixture
def reading_data(transactional_db, storage_backend, tmp_path) -> dict[str, Any]:
    # The data goes in before Playwright starts: its event loop makes Django refuse ORM calls.
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo")
    ct = make_modality(township, ExamKind.CT, "XUANWO_CT")
    dr = make_modality(township, ExamKind.DR, "XUANWO_DR")
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in range(1, CT_SLICES + 1):
        ds = make_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=number,
            rows=CT_SIZE,
            columns=CT_SIZE,
            patient_id="P300",
            patient_name="Zhao^Liu=赵六",
            character_set="ISO_IR 192",
        )
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-32, -32, -5.0 * number]
        ds.SliceThickness = 5
        ds.PixelData = (ct_hounsfield(number) + 1024).astype(np.uint16).tobytes()
        ingest(ds, tmp_path, ct)
    prior_uid, prior_series_uid = generate_uid(), generate_uid()
    for number in range(1, 3):
        ds = make_dataset(
            study_uid=prior_uid,
            series_uid=prior_series_uid,
            instance_number=number,
            patient_id="P300",
            patient_name="Zhao^Liu",
        )
        ingest(ds, tmp_path, ct)
    dx_studies, dx_files = {}, {}
    for kind, (entries, first_mapped) in VOI_LUTS.items():
        dx = make_dx_with_voi_lut(entries, first_mapped)
        ingest(dx, tmp_path, dr)
        stored_dx = Study.objects.get(study_uid=dx.StudyInstanceUID).series.get().instances.get()
        dx_studies[kind] = dx.StudyInstanceUID
        dx_files[kind] = Path(settings.STORAGE_ROOT) / stored_dx.storage_key
    client = Client()
    client.force_login(technologist)
    return {
        "ct": study_uid,
        "prior": prior_uid,
        "dx": dx_studies,
        "dx_file": dx_files,
        "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
    }


@pytest.fixture
def browser_page(live_server, reading_data, chromium) -> Any:
    return watched_page(session_context(chromium, live_server.url, reading_data["session"]))


def open_viewer(page, url: str, panes: int = 1) -> None:
    page.goto(url)
    # Conditions are functions, not expressions: Playwright evaluates an expression with
    # eval, which the page's Content-Security-Policy refuses.
    # Every image of the stack in the cache: from here on nothing waits on the network.
    for index in range(panes):
        page.wait_for_function(
            f"() => window.yunyingViewer?.viewers[0].panes[{index}].stackMs != null",
            timeout=60_000,
        )
    # The tools (window/level, measuring, wheel scrolling) come in their own chunk after
    # the first image.
    page.evaluate("() => window.yunyingViewer.viewers[0].toolsReady.then(() => true)")
    assert page.errors == []


def pane_state(page, index: int = 0) -> dict[str, Any]:
    return page.evaluate(
        """(index) => {
            const pane = window.yunyingViewer.viewers[0].panes[index];
            return {index: pane.viewport.getCurrentImageIdIndex(), total: pane.imageIds.length,
                    loaded: pane.loaded, failed: pane.failed};
        }""",
        index,
    )


def wait_for_image(page, index: int) -> None:
    page.wait_for_function(
        """(index) => {
            const viewport = window.yunyingViewer.viewers[0].panes[0].viewport;
            return viewport.getCurrentImageIdIndex() === index && viewport.getCurrentImageId();
        }""",
        arg=index,
    )
    # One frame for the render that follows the change.
    page.evaluate("() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))")


def gray(page, points: list[tuple[int, int]], pane: int = 0) -> np.ndarray:
    pixels = page.evaluate(
        "([pane, points]) => window.yunyingViewer.viewers[0].panes[pane].sample(points)", [pane, points]
    )
    rgba = np.array(pixels, dtype=float)
    assert np.all(rgba[:, 0] == rgba[:, 1]) and np.all(rgba[:, 1] == rgba[:, 2]), "a gray image came out coloured"
    return rgba[:, 0]


def expected_ct(slice_number: int, center: float, width: float) -> np.ndarray:
    hu = ct_hounsfield(slice_number)
    return linear_window(np.array([hu[row, column] for column, row in block_centres(CT_SIZE, CT_BLOCK)]), center, width)


def overlay(page, corner: str) -> str:
    return page.locator(f'[data-pane="0"] [data-overlay="{corner}"]').inner_text()


@BOTH_BACKENDS
def test_a_ct_study_opens_with_the_files_window_and_its_overlay(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    state = pane_state(page)
    assert state == {"index": 0, "total": CT_SLICES, "loaded": CT_SLICES, "failed": 0}
    wait_for_image(page, 0)
    centres = block_centres(CT_SIZE, CT_BLOCK)
    # make_dataset's window: 40/400.
    assert np.abs(gray(page, centres) - expected_ct(1, 40, 400)).max() <= TOLERANCE
    assert "赵六" in overlay(page, "tl")
    assert "男" in overlay(page, "tl")  # PatientSex M, as a word, as every page shows it
    assert "P300" in overlay(page, "tl")
    assert "2025-09-01" in overlay(page, "tr")
    assert "1/4" in overlay(page, "bl")
    assert "W: 400 L: 40" in overlay(page, "br")
    assert page.locator(".yv-thumb img").count() == 1


@BOTH_BACKENDS
def test_a_server_rendered_first_image_stands_in_until_cornerstone_draws(live_server, browser_page, reading_data):
    page = browser_page
    url = f"{live_server.url}/viewer/{reading_data['ct']}/"
    # Without the viewer's code the stand-in stays: it is the first slice, rendered by the
    # server at the file's window.
    page.route(VIEWER_ENTRY, lambda route: route.abort())
    page.goto(url)
    page.wait_for_function("() => window.yunyingPreview?.shown != null", timeout=60_000)
    preview = page.locator('[data-pane="0"] img[data-preview]')
    assert preview.count() == 1
    # Rendered into the page itself (a CT slice: cloudpacs.views.viewer.stand_in_data_url).
    assert (preview.get_attribute("src") or "").startswith("data:image/jpeg;base64,")
    pixels = page.evaluate(
        """([points, size]) => {
            const image = document.querySelector('[data-pane="0"] img[data-preview]');
            const canvas = document.createElement('canvas');
            canvas.width = image.naturalWidth;
            canvas.height = image.naturalHeight;
            const context = canvas.getContext('2d');
            context.drawImage(image, 0, 0);
            return points.map(([x, y]) => Array.from(context.getImageData(
                Math.floor((x + 0.5) / size * image.naturalWidth),
                Math.floor((y + 0.5) / size * image.naturalHeight), 1, 1).data));
        }""",
        [block_centres(CT_SIZE, CT_BLOCK), CT_SIZE],
    )
    # A JPEG: a few levels of error on top of the window's arithmetic.
    assert np.abs(np.array(pixels, dtype=float)[:, 0] - expected_ct(1, 40, 400)).max() <= 8
    # With the code, Cornerstone's first frame takes its place.
    page.unroute(VIEWER_ENTRY)
    page.errors.clear()
    open_viewer(page, url)
    page.wait_for_function("() => window.yunyingPreview?.replaced != null")
    assert page.locator("img[data-preview]").count() == 0


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_the_stand_in_is_painted_without_any_script(live_server, browser_page, reading_data):
    page = browser_page
    # Neither the viewer's code nor the page's own script: the stand-in is in the markup.
    page.route(VIEWER_ENTRY, lambda route: route.abort())
    page.route("**/js/viewer-preview.js", lambda route: route.abort())
    page.goto(f"{live_server.url}/viewer/{reading_data['ct']}/")
    page.wait_for_function(
        "() => { const image = document.querySelector('[data-pane=\"0\"] > img[data-preview]');"
        " return image && image.complete && image.naturalWidth > 0; }",
        timeout=60_000,
    )
    image = page.locator('[data-pane="0"] > img[data-preview]').bounding_box()
    pane = page.locator('[data-pane="0"]').bounding_box()
    # Over the whole pane (scaled to it by the browser), the image at its own size.
    assert image is not None and pane is not None
    assert (round(image["width"]), round(image["height"])) == (round(pane["width"]), round(pane["height"]))
    assert page.evaluate("() => document.querySelector('img[data-preview]').naturalWidth") == CT_SIZE


# The paints of elements marked elementtiming, as Chromium reports them (Element Timing).
PAINTS = """
window.__paints = [];
new PerformanceObserver((list) => {
  list.getEntries().forEach((entry) => window.__paints.push(entry.identifier));
}).observe({type: "element", buffered: true});
"""


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_the_stand_in_is_painted_while_every_style_sheet_is_held_back(live_server, browser_page, reading_data):
    page = browser_page
    # A <link rel="stylesheet"> in the head holds the page's first paint until it is in: the
    # viewer's page carries its style sheets in the page (under hashes in its
    # Content-Security-Policy), so the stand-in is painted, over the pane, whatever the
    # style sheet files are doing.
    held: list[Any] = []
    page.route(re.compile(r"[.]css([?]|$)"), lambda route: held.append(route))
    # The viewer's code too, so that Cornerstone does not take the stand-in's place meanwhile.
    entry: list[Any] = []
    page.route(VIEWER_ENTRY, lambda route: entry.append(route))
    page.add_init_script(PAINTS)
    page.goto(f"{live_server.url}/viewer/{reading_data['ct']}/", wait_until="commit")
    page.wait_for_function("() => window.__paints?.includes('yunying-stand-in')", timeout=60_000)
    image = page.locator('[data-pane="0"] > img[data-preview]').bounding_box()
    pane = page.locator('[data-pane="0"]').bounding_box()
    assert image is not None and pane is not None
    assert (round(image["width"]), round(image["height"])) == (round(pane["width"]), round(pane["height"]))
    # The viewer's dark surface and the site's header are styled too, from the page itself.
    assert page.evaluate("() => getComputedStyle(document.querySelector('.yv')).backgroundColor") == "rgb(28, 31, 36)"
    assert page.evaluate("() => getComputedStyle(document.querySelector('.site-header')).display") == "flex"
    for route in held:
        route.abort()
    for route in entry:
        route.continue_()
    # The policy allowed those <style> elements (and refused nothing else): Cornerstone draws.
    page.wait_for_function("() => window.yunyingPreview?.replaced != null", timeout=60_000)
    assert page.errors == []


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_the_stand_in_is_painted_while_every_request_after_the_pages_is_held_back(
    live_server, browser_page, reading_data
):
    page = browser_page
    # A CT slice's stand-in is rendered into the page itself: painted in the page's first
    # frame, whatever becomes of the requests the page starts (its scripts, the viewer's
    # code and chunks, the series' metadata and first frame).
    url = f"{live_server.url}/viewer/{reading_data['ct']}/"
    held: list[Any] = []
    page.route(lambda address: address != url, lambda route: held.append(route))
    page.add_init_script(PAINTS)
    page.goto(url, wait_until="commit")
    page.wait_for_function("() => window.__paints?.includes('yunying-stand-in')", timeout=60_000)
    image = page.locator('[data-pane="0"] > img[data-preview]').bounding_box()
    pane = page.locator('[data-pane="0"]').bounding_box()
    assert image is not None and pane is not None
    assert (round(image["width"]), round(image["height"])) == (round(pane["width"]), round(pane["height"]))
    asked = [route.request.url for route in held]
    assert any(address.endswith("/js/viewer-preview.js") for address in asked)
    assert not any("/rendered" in address for address in asked)
    for route in held:
        route.continue_()
    page.unroute_all()
    page.wait_for_function("() => window.yunyingPreview?.replaced != null", timeout=60_000)
    assert page.errors == []


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_the_tools_chunks_are_asked_for_only_once_the_stand_in_is_painted(live_server, browser_page, reading_data):
    page = browser_page
    # The stand-in is in the page; the page's script, held back here, asks for the tools'
    # chunks once it is painted: nothing but the stand-in's own page is on its path.
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    held: list[Any] = []
    page.route("**/js/viewer-preview.js", lambda route: held.append(route))
    page.add_init_script(PAINTS)
    page.goto(f"{live_server.url}/viewer/{reading_data['ct']}/", wait_until="commit")
    page.wait_for_function("() => window.__paints?.includes('yunying-stand-in')", timeout=60_000)
    page.wait_for_timeout(500)
    assert held
    assert not [address for address in asked if "/chunks/" in address]
    held[0].continue_()
    page.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].firstImageMs != null", timeout=60_000)
    page.wait_for_function("() => performance.getEntriesByName('yunying:tools').length > 0", timeout=60_000)
    assert len([address for address in asked if "/chunks/tools-" in address]) == 1
    assert page.errors == []


@pytest.fixture
def stand_in_by_url(monkeypatch) -> None:
    """The page's stand-in asked for by its URL, as when the page could not render it (or
    for an image over 1024 x 1024): a request the tests can hold back."""
    monkeypatch.setattr("cloudpacs.views.viewer.stand_in_picture", lambda first, size: None)


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_the_viewers_code_runs_only_once_the_stand_in_is_painted(
    live_server, browser_page, reading_data, stand_in_by_url
):
    page = browser_page
    # The stand-in held back by the server: the entry is fetched, but not run.
    held: list[Any] = []
    page.route(re.compile(r"/rendered[?]"), lambda route: held.append(route))
    page.goto(f"{live_server.url}/viewer/{reading_data['ct']}/", wait_until="domcontentloaded")
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').some((e) => /[/]viewer-[^/]+[.]js$/.test(e.name))",
        timeout=60_000,
    )
    # Time for the entry to be compiled and run, had it been a plain module script.
    page.wait_for_timeout(1000)
    assert held
    assert page.evaluate("() => performance.getEntriesByName('yunying:code').length") == 0
    # The stand-in comes: painted first, then the viewer's code runs and Cornerstone draws.
    held[0].continue_()
    page.wait_for_function("() => window.yunyingPreview?.replaced != null", timeout=60_000)
    shown, code = page.evaluate(
        "() => [window.yunyingPreview.shown, performance.getEntriesByName('yunying:code')[0].startTime]"
    )
    assert shown is not None and shown < code
    assert page.errors == []


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_the_viewer_starts_when_its_stand_in_cannot_be_had(live_server, browser_page, reading_data, stand_in_by_url):
    page = browser_page
    page.route(re.compile(r"/rendered[?]"), lambda route: route.fulfill(status=500, body="no"))
    page.goto(f"{live_server.url}/viewer/{reading_data['ct']}/")
    page.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].firstImageMs != null", timeout=60_000)
    assert page.locator("img[data-preview]").count() == 0


# Just over the largest image whose stand-in the server renders quickly
# (cloudpacs.views.viewer.stand_in_first: 1024 x 1024).
LARGE_DX_SIZE = 1040
LARGE_DX_SPACING = 0.2


@pytest.fixture
def large_dx(reading_data, tmp_path) -> str:
    """A DX too large for a quick stand-in, of the patient in reading_data; its Study UID."""
    ds = make_dataset(
        sop_class_uid=DigitalXRayImageStorageForPresentation,
        modality="DX",
        rows=LARGE_DX_SIZE,
        columns=LARGE_DX_SIZE,
        patient_id="P300",
        patient_name="Zhao^Liu",
    )
    # A plane in the patient, so that lengths are in millimetres (without one Cornerstone
    # counts them in pixels, on either path).
    ds.PixelSpacing = [LARGE_DX_SPACING, LARGE_DX_SPACING]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ramp = np.add.outer(np.arange(LARGE_DX_SIZE), np.arange(LARGE_DX_SIZE)) * 2
    ds.PixelData = ramp.astype(np.uint16).tobytes()
    ds.WindowCenter = LARGE_DX_SIZE * 2
    ds.WindowWidth = LARGE_DX_SIZE * 4
    ingest(ds, tmp_path, Modality.objects.get(ae_title="XUANWO_DR"))
    return str(ds.StudyInstanceUID)


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_a_large_images_frame_is_asked_for_only_after_its_stand_in(live_server, large_dx, browser_page, reading_data):
    page = browser_page
    # The stand-in and the viewer's code both held back: the page's script asks for the
    # series' metadata, but not yet for the first frame, whose transfer would compete with
    # the server's rendering of the stand-in.
    held: dict[str, list[Any]] = {"stand-in": [], "entry": []}
    page.route(re.compile(r"/rendered[?]"), lambda route: held["stand-in"].append(route))
    page.route(VIEWER_ENTRY, lambda route: held["entry"].append(route))
    events: list[tuple[str, str]] = []
    page.on("request", lambda request: events.append(("asked", request.url)))
    page.on("requestfinished", lambda request: events.append(("finished", request.url)))
    with page.expect_request_finished(lambda request: request.url.endswith("/metadata")):
        page.goto(f"{live_server.url}/viewer/{large_dx}/", wait_until="commit")
    assert held["stand-in"] and held["entry"]
    assert not [url for _, url in events if "/frames/" in url]
    # The stand-in comes: once it is in (and painted), the frame is asked for.
    with page.expect_request(lambda request: request.url.endswith("/frames/1")):
        held["stand-in"][0].continue_()
    stand_in_in = events.index(next(event for event in events if event[0] == "finished" and "/rendered?" in event[1]))
    frame_asked = events.index(next(event for event in events if event[0] == "asked" and "/frames/" in event[1]))
    assert stand_in_in < frame_asked
    # Then the viewer's code: the image loader takes the page's request, it does not ask again.
    held["entry"][0].continue_()
    page.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].firstImageMs != null", timeout=60_000)
    assert frame_requests(page)["single"] == [events[frame_asked][1]]
    assert page.errors == []


@BOTH_BACKENDS
def test_scrolling_by_keys_and_wheel_shows_each_slice(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    centres = block_centres(CT_SIZE, CT_BLOCK)
    page.locator("[data-yunying-viewer]").focus()

    page.keyboard.press("ArrowDown")
    wait_for_image(page, 1)
    assert np.abs(gray(page, centres) - expected_ct(2, 40, 400)).max() <= TOLERANCE
    assert "2/4" in overlay(page, "bl")

    page.keyboard.press("End")
    wait_for_image(page, CT_SLICES - 1)
    assert np.abs(gray(page, centres) - expected_ct(CT_SLICES, 40, 400)).max() <= TOLERANCE

    page.keyboard.press("Home")
    wait_for_image(page, 0)
    assert np.abs(gray(page, centres) - expected_ct(1, 40, 400)).max() <= TOLERANCE

    page.keyboard.press("PageDown")
    wait_for_image(page, 1)

    box = page.locator('[data-pane="0"] [data-viewport]').bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    wait_for_image(page, 2)
    assert np.abs(gray(page, centres) - expected_ct(3, 40, 400)).max() <= TOLERANCE


def frame_requests(page) -> dict[str, list[str]]:
    """The page's requests for frames, from its resource timing (which lists an answer the
    HTTP cache gave too): one frame at a time, and several instances' frames at once."""
    names = page.evaluate("() => performance.getEntriesByType('resource').map((entry) => entry.name)")
    return {
        "single": [name for name in names if "/frames/" in name],
        "batched": [name for name in names if "/frames?instances=" in name],
    }


def test_the_stack_comes_in_batches_and_the_first_frame_is_fetched_once(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    assert pane_state(page) == {"index": 0, "total": CT_SLICES, "loaded": CT_SLICES, "failed": 0}
    requests = frame_requests(page)
    # The first image: the page's own request, whose bytes the image loader decodes (it
    # does not ask again); the three others in one request for several instances.
    assert len(requests["single"]) == 1 and requests["single"][0].endswith("/frames/1")
    assert len(requests["batched"]) == 1
    assert requests["batched"][0].split("instances=")[1].count(",") == CT_SLICES - 2
    centres = block_centres(CT_SIZE, CT_BLOCK)
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("End")
    wait_for_image(page, CT_SLICES - 1)
    assert np.abs(gray(page, centres) - expected_ct(CT_SLICES, 40, 400)).max() <= TOLERANCE


def test_a_cts_whole_stack_is_decoded_without_the_decode_workers(live_server, browser_page, reading_data):
    page = browser_page
    # The decode workers' script held back throughout: the first image and every frame of the
    # stack's batches (uncompressed, grey) are decoded on the page's own thread, and drawn.
    held: list[Any] = []
    page.route(re.compile(r"/workers/decodeImageFrameWorker-[^/]+[.]js$"), lambda route: held.append(route))
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    assert pane_state(page) == {"index": 0, "total": CT_SLICES, "loaded": CT_SLICES, "failed": 0}
    assert len(frame_requests(page)["batched"]) == 1
    assert held == []
    assert page.evaluate("() => performance.getEntriesByName('yunying:workers').length") == 0
    # Each slice's own values (the batch's parts are read in place, each at its offset).
    centres = block_centres(CT_SIZE, CT_BLOCK)
    page.locator("[data-yunying-viewer]").focus()
    for index in range(CT_SLICES):
        if index:
            page.keyboard.press("ArrowDown")
        wait_for_image(page, index)
        assert np.abs(gray(page, centres) - expected_ct(index + 1, 40, 400)).max() <= TOLERANCE, index
    assert page.errors == []


def test_a_cts_first_image_and_stack_start_no_decode_worker(live_server, browser_page, reading_data):
    page = browser_page
    # The stack's batches held back: the first image is decoded on the page's thread and drawn,
    # first on the CPU and then by WebGL, and no decode worker is started for it.
    workers: list[str] = []
    page.on(
        "request", lambda request: "/workers/decodeImageFrameWorker-" in request.url and workers.append(request.url)
    )
    held: list[Any] = []
    page.route("**/frames?instances=*", lambda route: held.append(route))
    page.goto(f"{live_server.url}/viewer/{reading_data['ct']}/")
    page.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].firstImageMs != null", timeout=30_000)
    page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].onGpu.then(() => true)")
    centres = block_centres(CT_SIZE, CT_BLOCK)
    assert np.abs(gray(page, centres) - expected_ct(1, 40, 400)).max() <= TOLERANCE
    for _ in range(600):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the stack's batch was not asked for"
    assert workers == []
    assert page.evaluate("() => performance.getEntriesByName('yunying:workers').length") == 0
    # The batch's frames are decoded on the page's thread too: the whole stack comes, and no
    # worker is started for it.
    for route in held:
        route.continue_()
    page.unroute("**/frames?instances=*")
    page.wait_for_function("() => window.yunyingViewer.viewers[0].panes[0].stackMs != null", timeout=60_000)
    assert pane_state(page) == {"index": 0, "total": CT_SLICES, "loaded": CT_SLICES, "failed": 0}
    assert workers == []
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("End")
    wait_for_image(page, CT_SLICES - 1)
    assert np.abs(gray(page, centres) - expected_ct(CT_SLICES, 40, 400)).max() <= TOLERANCE
    assert page.errors == []


def test_a_batch_that_fails_is_fetched_a_frame_at_a_time(live_server, browser_page, reading_data):
    page = browser_page
    page.route("**/frames?instances=*", lambda route: route.fulfill(status=503, body="busy"))
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    assert pane_state(page) == {"index": 0, "total": CT_SLICES, "loaded": CT_SLICES, "failed": 0}
    assert len(frame_requests(page)["single"]) == CT_SLICES
    centres = block_centres(CT_SIZE, CT_BLOCK)
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("End")
    wait_for_image(page, CT_SLICES - 1)
    assert np.abs(gray(page, centres) - expected_ct(CT_SLICES, 40, 400)).max() <= TOLERANCE


@pytest.mark.parametrize(
    ("preset", "center", "width"),
    [("40,80", 40, 80), ("-600,1500", -600, 1500), ("40,400", 40, 400), ("40,350", 40, 350), ("400,1800", 400, 1800)],
    ids=["brain", "lung", "mediastinum", "abdomen", "bone"],
)
def test_a_window_preset_maps_hounsfield_units_as_its_window_says(
    live_server, browser_page, reading_data, preset, center, width
):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    centres = block_centres(CT_SIZE, CT_BLOCK)
    choose(page, "select[data-preset]", preset)
    page.wait_for_function(
        f"() => document.querySelector('[data-pane=\"0\"] [data-overlay=\"br\"]').textContent.includes('W: {width} ')"
    )
    wait_for_image(page, 0)
    assert np.abs(gray(page, centres) - expected_ct(1, center, width)).max() <= TOLERANCE
    # The window stays as the reader set it while scrolling.
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("ArrowDown")
    wait_for_image(page, 1)
    assert np.abs(gray(page, centres) - expected_ct(2, center, width)).max() <= TOLERANCE


def test_invert_and_the_files_default_window(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    centres = block_centres(CT_SIZE, CT_BLOCK)
    press(page, '[data-action="invert"]')
    wait_for_image(page, 0)
    assert np.abs(gray(page, centres) - (255 - expected_ct(1, 40, 400))).max() <= TOLERANCE
    choose(page, "select[data-preset]", "-600,1500")
    choose(page, "select[data-preset]", "default")
    wait_for_image(page, 0)
    assert np.abs(gray(page, centres) - expected_ct(1, 40, 400)).max() <= TOLERANCE


def test_cine_plays_through_the_stack_and_pauses(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    page.fill("[data-fps]", "20")
    press(page, '[data-action="cine"]')
    seen = page.evaluate(
        """() => new Promise((resolve) => {
            const viewport = window.yunyingViewer.viewers[0].panes[0].viewport;
            const seen = new Set();
            const timer = setInterval(() => {
                seen.add(viewport.getCurrentImageIdIndex());
                if (seen.size === 4) { clearInterval(timer); resolve([...seen].sort()); }
            }, 5);
        })"""
    )
    assert seen == [0, 1, 2, 3]
    press(page, '[data-action="cine"]')
    assert page.locator('[data-action="cine"]').get_attribute("aria-pressed") == "false"
    still = pane_state(page)["index"]
    page.wait_for_timeout(300)
    assert pane_state(page)["index"] == still


def test_rotate_flip_and_fit_move_the_image_on_the_canvas(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    choose(page, "select[data-preset]", "400,1800")
    wait_for_image(page, 0)
    centres = block_centres(CT_SIZE, CT_BLOCK)
    upright = gray(page, centres)
    press(page, '[data-action="flip-h"]')
    wait_for_image(page, 0)
    # sample() follows the image: the same image pixel shows the same value however turned.
    assert np.abs(gray(page, centres) - upright).max() <= TOLERANCE
    assert "水平翻转" in overlay(page, "br")
    press(page, '[data-action="rotate"]')
    wait_for_image(page, 0)
    assert np.abs(gray(page, centres) - upright).max() <= TOLERANCE
    assert "90°" in overlay(page, "br")
    presentation = page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].viewport.getViewPresentation()")
    assert presentation["rotation"] == 90
    assert presentation["flipHorizontal"] is True
    press(page, '[data-action="reset"]')
    wait_for_image(page, 0)
    presentation = page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].viewport.getViewPresentation()")
    assert presentation["rotation"] == 0
    assert presentation["flipHorizontal"] is False


def test_a_prior_study_opens_in_the_second_pane(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/?prior={reading_data['prior']}", panes=2)
    assert page.locator('section[data-pane="1"]').is_visible()
    assert pane_state(page, 1)["total"] == 2
    assert "1/2" in page.locator('[data-pane="1"] [data-overlay="bl"]').inner_text()
    choose(page, "select[data-prior]", "")
    assert page.locator('section[data-pane="1"]').is_hidden()


# Counts the WebGL contexts the page's render windows create (vtk.js's get3DContext; the
# probes of what WebGL can do make their own), run before the page's scripts.
COUNT_WEBGL_CONTEXTS = """(() => {
    const contexts = new Set();
    const getContext = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function (type, ...rest) {
        const context = getContext.call(this, type, ...rest);
        if (context && /webgl/.test(type) && /get3DContext/.test(new Error().stack)) contexts.add(context);
        return context;
    };
    window.renderWindowContexts = () => contexts.size;
})()"""


def test_every_pane_is_drawn_through_one_webgl_context(live_server, browser_page, reading_data):
    page = browser_page
    page.add_init_script(COUNT_WEBGL_CONTEXTS)
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/?prior={reading_data['prior']}", panes=2)
    # The one context the panes share (Cornerstone's default made seven, each costly in
    # software WebGL).
    assert page.evaluate("() => window.renderWindowContexts()") == 1
    # Both panes drawn, each with its own image: the current study's first slice stays in
    # the first pane while the prior is drawn in the second, and after both have moved
    # (the prior to its second image, the current study with it by linked scrolling to its
    # last: the prior's images have no positions, so by the same fraction of the stack).
    assert page.evaluate("() => window.yunyingViewer.viewers[0].panes[1].firstImageMs != null")
    centres = block_centres(CT_SIZE, CT_BLOCK)
    assert np.abs(gray(page, centres) - expected_ct(1, 40, 400)).max() <= TOLERANCE
    page.evaluate("() => window.yunyingViewer.viewers[0].panes[1].scrollTo(1)")
    wait_for_image(page, CT_SLICES - 1)
    assert np.abs(gray(page, centres) - expected_ct(CT_SLICES, 40, 400)).max() <= TOLERANCE
    assert "2/2" in page.locator('[data-pane="1"] [data-overlay="bl"]').inner_text()


# At the first image's event (dispatched in the task of its render, before the pane moves to
# WebGL): the render windows' WebGL contexts made so far, and the first pane's pixels.
FIRST_IMAGE_SEEN = """(() => {
    document.addEventListener('yunying:first-image', (event) => {
        if (event.detail.pane !== 0) return;
        const pane = window.yunyingViewer.viewers[0].panes[0];
        window.atFirstImage = {contexts: window.renderWindowContexts(), cpu: pane.onCpu,
                               pixels: pane.sample(window.samplePoints)};
    }, {capture: true, once: true});
})()"""


def test_the_first_image_is_drawn_on_the_cpu_then_by_webgl(live_server, browser_page, reading_data):
    page = browser_page
    centres = block_centres(CT_SIZE, CT_BLOCK)
    page.add_init_script(COUNT_WEBGL_CONTEXTS)
    page.add_init_script(f"window.samplePoints = {json.dumps(centres)};")
    page.add_init_script(FIRST_IMAGE_SEEN)
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    # Drawn by Cornerstone's CPU path, before any WebGL context of the rendering engine:
    # its first WebGL draw (context, shaders, in software WebGL the draw itself) is not on
    # the way to the first image.
    seen = page.evaluate("() => window.atFirstImage")
    assert seen["contexts"] == 0 and seen["cpu"] is True
    first = np.array(seen["pixels"], dtype=float)
    assert np.all(first[:, 0] == first[:, 1]) and np.all(first[:, 1] == first[:, 2])
    assert np.abs(first[:, 0] - expected_ct(1, 40, 400)).max() <= TOLERANCE
    # Then by WebGL through the one context, the same image at the same window.
    assert page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].onCpu") is False
    assert page.evaluate("() => window.renderWindowContexts()") == 1
    assert np.abs(gray(page, centres) - expected_ct(1, 40, 400)).max() <= TOLERANCE
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("End")
    wait_for_image(page, CT_SLICES - 1)
    assert np.abs(gray(page, centres) - expected_ct(CT_SLICES, 40, 400)).max() <= TOLERANCE
    assert page.errors == []


@pytest.mark.parametrize("lut", list(VOI_LUTS))
def test_a_dx_with_a_voi_lut_renders_like_the_pydicom_reference(live_server, browser_page, reading_data, lut):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['dx'][lut]}/")
    wait_for_image(page, 0)
    stored = dcmread(reading_data["dx_file"][lut])
    reference = apply_voi_lut(stored.pixel_array, stored) / 65535 * 255
    centres = block_centres(DX_SIZE, DX_BLOCK)
    expected = np.array([reference[row, column] for column, row in centres])
    shown = gray(page, centres)
    assert np.abs(shown - expected).max() <= TOLERANCE
    # The file's window would have looked clearly different: the LUT, not the window, is shown.
    windowed = linear_window(np.array([stored.pixel_array[row, column] for column, row in centres]), 3000, 1000)
    assert np.abs(shown - windowed).max() > 100
    assert "SQRT" in overlay(page, "br")


def drag(page, start: tuple[int, int], end: tuple[int, int]) -> None:
    """A left-button drag between two image pixels."""
    x0, y0 = page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", list(start))
    x1, y1 = page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", list(end))
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 9):
        page.mouse.move(x0 + (x1 - x0) * step / 8, y0 + (y1 - y0) * step / 8)
    # Rest on the end point for a couple of frames before letting go: a person's hand does,
    # and a loaded machine may otherwise drop the last move event of a throttled drag.
    settle(page)
    page.mouse.move(x1, y1)
    settle(page)
    page.mouse.up()
    settle(page)


def settle(page) -> None:
    """Wait for two animation frames, so what the last input changed has been applied."""
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")


def test_length_and_angle_measure_in_millimetres_and_degrees(live_server, browser_page, reading_data):
    page = browser_page
    open_viewer(page, f"{live_server.url}/viewer/{reading_data['ct']}/")
    wait_for_image(page, 0)
    page.click('[data-tool="Length"]')
    assert page.locator('[data-tool="Length"]').get_attribute("aria-pressed") == "true"
    # 64 pixels of 0.5 mm.
    drag(page, (16, 64), (80, 64))
    page.wait_for_function("() => window.yunyingViewer.viewers[0].measurements().some((m) => m.length)")
    (length,) = page.evaluate("window.yunyingViewer.viewers[0].measurements()")
    assert length["tool"] == "Length"
    assert abs(length["length"] - 32.0) < 0.5
    assert length["unit"] == "mm"

    page.click('[data-tool="Angle"]')
    for point in ([100, 64], [64, 64], [64, 100]):
        x, y = page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", point)
        page.mouse.click(x, y)
    page.wait_for_function("() => window.yunyingViewer.viewers[0].measurements().some((m) => m.angle)")
    angle = next(m for m in page.evaluate("window.yunyingViewer.viewers[0].measurements()") if m["tool"] == "Angle")
    assert abs(angle["angle"] - 90) < 1

    press(page, '[data-action="clear"]')
    assert page.evaluate("window.yunyingViewer.viewers[0].measurements()") == []


def large_dx_expected(points: list[tuple[int, int]], center: float, width: float) -> np.ndarray:
    """The large DX's ramp (stored 2 x (row + column), the factory's rescale of -1024) at
    image points, through a linear window."""
    return linear_window(np.array([2.0 * (row + column) - 1024 for column, row in points]), center, width)


def shown_window(page) -> tuple[float, float]:
    """The first pane's window (centre, width) from its VOI range (Cornerstone's linear
    toLowHighRange undone)."""
    low, high = page.evaluate(
        """() => {
            const {voiRange} = window.yunyingViewer.viewers[0].panes[0].viewport.getProperties();
            return [voiRange.lower, voiRange.upper];
        }"""
    )
    return (low + high) / 2 + 0.5, high - low + 1


def button_drag(page, start: tuple[float, float], end: tuple[float, float], button: str) -> None:
    """A drag on the page (CSS pixels) with one mouse button, ending at rest."""
    page.mouse.move(*start)
    page.mouse.down(button=button)
    for step in range(1, 9):
        page.mouse.move(start[0] + (end[0] - start[0]) * step / 8, start[1] + (end[1] - start[1]) * step / 8)
    settle(page)
    page.mouse.up(button=button)
    settle(page)


def on_cpu(page) -> dict[str, Any]:
    return page.evaluate(
        """() => {
            const pane = window.yunyingViewer.viewers[0].panes[0];
            return {cpu: pane.onCpu, contexts: window.renderWindowContexts()};
        }"""
    )


@pytest.mark.parametrize("storage_backend", ["local"], indirect=True)
def test_a_large_single_image_is_read_on_the_cpu_without_any_webgl(live_server, large_dx, browser_page, reading_data):
    page = browser_page
    page.add_init_script(COUNT_WEBGL_CONTEXTS)
    open_viewer(page, f"{live_server.url}/viewer/{large_dx}/")
    wait_for_image(page, 0)
    # Reported whole while still drawn by the CPU path: no WebGL context was ever made (the
    # move of a 15 MB image to software WebGL took seconds).
    assert on_cpu(page) == {"cpu": True, "contexts": 0}
    points = [(column, row) for row in range(40, LARGE_DX_SIZE, 160) for column in range(40, LARGE_DX_SIZE, 160)]
    centre, width = LARGE_DX_SIZE * 2, LARGE_DX_SIZE * 4
    assert np.abs(gray(page, points) - large_dx_expected(points, centre, width)).max() <= TOLERANCE
    assert "100%" in overlay(page, "br")

    # Window/level with the left button's tool: narrower and lower, shown as it says.
    x, y = page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", [520, 520])
    button_drag(page, (x, y), (x - 60, y + 40), "left")
    centre, width = shown_window(page)
    assert width < LARGE_DX_SIZE * 4
    assert np.abs(gray(page, points) - large_dx_expected(points, centre, width)).max() <= TOLERANCE
    press(page, '[data-action="invert"]')
    settle(page)
    assert np.abs(gray(page, points) - (255 - large_dx_expected(points, centre, width))).max() <= TOLERANCE
    press(page, '[data-action="invert"]')
    settle(page)

    # Rotation and flips: the same image pixels keep their values wherever they are drawn.
    before = [page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", p) for p in points[:3]]
    press(page, '[data-action="flip-h"]')
    press(page, '[data-action="rotate"]')
    settle(page)
    after = [page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", p) for p in points[:3]]
    assert np.abs(np.array(after) - np.array(before)).max() > 50
    assert np.abs(gray(page, points) - large_dx_expected(points, centre, width)).max() <= TOLERANCE
    assert "90°" in overlay(page, "br") and "水平翻转" in overlay(page, "br")
    # Back upright, unflipped and fitted, as on WebGL.
    press(page, '[data-action="reset"]')
    settle(page)
    presentation = page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].viewport.getViewPresentation()")
    assert presentation["rotation"] == 0 and presentation["flipHorizontal"] is False
    centre, width = LARGE_DX_SIZE * 2, LARGE_DX_SIZE * 4
    assert np.abs(gray(page, points) - large_dx_expected(points, centre, width)).max() <= TOLERANCE
    assert "100%" in overlay(page, "br")

    # Zoom (right button) and pan (middle button): the image under the pointer follows.
    x, y = page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", [520, 520])
    button_drag(page, (x, y), (x, y + 80), "right")
    zoom = page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].zoom()")
    assert zoom > 1.2
    assert f"{round(zoom * 100)}%" in overlay(page, "br")
    middle = [(520, 520), (600, 480)]
    assert np.abs(gray(page, middle) - large_dx_expected(middle, centre, width)).max() <= TOLERANCE
    x, y = page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", [520, 520])
    button_drag(page, (x, y), (x + 50, y + 30), "middle")
    moved = page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", [520, 520])
    assert abs(moved[0] - (x + 50)) < 3 and abs(moved[1] - (y + 30)) < 3
    assert np.abs(gray(page, middle) - large_dx_expected(middle, centre, width)).max() <= TOLERANCE

    # A length in millimetres: 200 pixels of 0.2 mm.
    page.click('[data-tool="Length"]')
    drag(page, (420, 520), (620, 520))
    page.wait_for_function("() => window.yunyingViewer.viewers[0].measurements().some((m) => m.length)")
    (length,) = page.evaluate("window.yunyingViewer.viewers[0].measurements()")
    assert abs(length["length"] - 200 * LARGE_DX_SPACING) < 0.5
    assert length["unit"] == "mm"

    assert on_cpu(page) == {"cpu": True, "contexts": 0}
    assert page.errors == []
