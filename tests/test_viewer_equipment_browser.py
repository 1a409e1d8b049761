"""The viewer in a real headless Chromium with what ultrasound and other equipment sends: a
multi-frame ultrasound clip plays as cine at its own frame rate and pauses, colour images
(RGB, YBR_FULL, YBR_FULL_422 JPEG, palette colour of 16- and 8-bit entries) come out in their colours on the
canvas, and a video series says that it is a video instead of failing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from pydicom.uid import generate_uid

from facilities.models import ExamKind, User
from tests import equipment
from tests.browser import press, session_context, watched_page
from tests.factories import make_facility, make_modality, make_user
from tests.test_viewer_browser import ingest, open_viewer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROWS, COLUMNS, FRAMES = 48, 64, 8
# Where the left and right colour halves are sampled, and the bar of each cine frame.
LEFT, RIGHT = (COLUMNS // 4, ROWS // 2), (3 * COLUMNS // 4, ROWS // 2)
BAR = COLUMNS // FRAMES
COLOUR_TOLERANCE = 10

COLOUR_BUILDERS = {
    "rgb": equipment.us_single_rgb,
    "rgb-planar": lambda **fields: equipment.us_single_rgb(planar=1, **fields),
    "ybr-full": equipment.us_ybr_full,
    "ybr-full-422-jpeg": equipment.us_ybr_full_422_jpeg,
    "palette": equipment.us_palette,
    "palette-8-bit": lambda **fields: equipment.us_palette(entry_bits=8, **fields),
}


@pytest.fixture
def equipment_data(transactional_db, tmp_path) -> dict[str, Any]:
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo")
    console = make_modality(township, ExamKind.CT, "XUANWO_CT")
    cine = equipment.us_cine(frames=FRAMES, rows=ROWS, columns=COLUMNS)
    ingest(cine, tmp_path, console)
    colour = {}
    for name, build in COLOUR_BUILDERS.items():
        ds = build()
        ingest(ds, tmp_path, console)
        colour[name] = ds.StudyInstanceUID
    video = equipment.endoscopy_video()
    ingest(video, tmp_path, console)
    # Three colour stills of one series: the second and third come in one batch
    # (.../frames?instances=), which only the decode workers decode.
    stills_study, stills_series = generate_uid(), generate_uid()
    for number in range(1, 4):
        still = equipment.us_single_rgb(study_uid=stills_study, series_uid=stills_series, instance_number=number)
        ingest(still, tmp_path, console)
    client = Client()
    client.force_login(technologist)
    return {
        "cine": cine.StudyInstanceUID,
        "colour": colour,
        "video": video.StudyInstanceUID,
        "stills": stills_study,
        "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
    }


@pytest.fixture
def page(live_server, equipment_data, chromium) -> Any:
    return watched_page(session_context(chromium, live_server.url, equipment_data["session"]))


def sample(page, points: list[tuple[int, int]]) -> np.ndarray:
    page.evaluate("() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))")
    pixels = page.evaluate("(points) => window.yunyingViewer.viewers[0].panes[0].sample(points)", points)
    return np.array(pixels, dtype=float)[:, :3]


def current_index(page) -> int:
    return page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].viewport.getCurrentImageIdIndex()")


def bar_column(page) -> int:
    """Which frame's bar is on the canvas: the column block that is white."""
    centres = [(block * BAR + BAR // 2, ROWS // 2) for block in range(FRAMES)]
    gray = sample(page, centres)[:, 0]
    assert sorted(gray)[-2] < 100, gray  # one white block, the others dark
    return int(np.argmax(gray))


def test_an_ultrasound_clip_plays_at_its_own_frame_rate_and_pauses(live_server, page, equipment_data):
    open_viewer(page, f"{live_server.url}/viewer/{equipment_data['cine']}/")
    total = page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].imageIds.length")
    assert total == FRAMES
    # Frame Time 40 ms: 25 frames a second, taken from the file.
    assert page.input_value("[data-fps]") == "25"
    assert bar_column(page) == 0
    press(page, '[data-action="cine"]')
    assert page.locator('[data-action="cine"]').get_attribute("aria-pressed") == "true"
    seen = page.evaluate(
        """(frames) => new Promise((resolve) => {
            const viewport = window.yunyingViewer.viewers[0].panes[0].viewport;
            const seen = new Set();
            const started = performance.now();
            const timer = setInterval(() => {
                seen.add(viewport.getCurrentImageIdIndex());
                if (seen.size === frames) {
                    clearInterval(timer);
                    resolve({frames: [...seen].sort((a, b) => a - b), ms: performance.now() - started});
                }
            }, 5);
        })""",
        FRAMES,
    )
    assert seen["frames"] == list(range(FRAMES))
    press(page, '[data-action="cine"]')
    assert page.locator('[data-action="cine"]').get_attribute("aria-pressed") == "false"
    still = current_index(page)
    page.wait_for_timeout(300)
    assert current_index(page) == still
    # What is drawn is the frame the viewport says: its bar, from the file's pixel data.
    assert bar_column(page) == still
    assert page.errors == []


def test_a_jpeg_images_decode_workers_start_as_soon_as_its_metadata_is_in(live_server, page, equipment_data):
    # A JPEG image (YBR_FULL_422, as ultrasound consoles send it) is decoded only by the decode
    # workers: they are started from the page's early metadata, before the pane has opened the
    # series, not when its first frame is given to them. (An uncompressed grey one is decoded
    # on the page's thread and its workers wait: test_viewer_browser.py.)
    open_viewer(page, f"{live_server.url}/viewer/{equipment_data['colour']['ybr-full-422-jpeg']}/")
    marks = page.evaluate(
        """() => Object.fromEntries(['yunying:workers', 'yunying:pane0:metadata'].map(
            (name) => [name, performance.getEntriesByName(name, 'mark')[0]?.startTime ?? null]))"""
    )
    assert marks["yunying:workers"] is not None
    assert marks["yunying:workers"] <= marks["yunying:pane0:metadata"]
    left, right = sample(page, [LEFT, RIGHT])
    assert np.abs(left - equipment.LEFT_RGB).max() <= COLOUR_TOLERANCE, left
    assert np.abs(right - equipment.RIGHT_RGB).max() <= COLOUR_TOLERANCE, right
    assert page.errors == []


def test_a_colour_series_batched_frames_are_decoded_by_the_workers(live_server, page, equipment_data):
    # Each part of a batch's answer is a view into the whole body; a frame the workers decode
    # is copied out of it before it is sent to them (cornerstone.js).
    open_viewer(page, f"{live_server.url}/viewer/{equipment_data['stills']}/")
    state = page.evaluate(
        """() => { const pane = window.yunyingViewer.viewers[0].panes[0];
                   return [pane.imageIds.length, pane.loaded, pane.failed]; }"""
    )
    assert state == [3, 3, 0]
    batched = page.evaluate(
        "() => performance.getEntriesByType('resource').filter((e) => e.name.includes('/frames?instances=')).length"
    )
    assert batched == 1
    assert page.evaluate("() => performance.getEntriesByName('yunying:workers').length") == 1
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("End")
    page.wait_for_function("() => window.yunyingViewer.viewers[0].panes[0].viewport.getCurrentImageIdIndex() === 2")
    page.evaluate("() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))")
    left, right = sample(page, [LEFT, RIGHT])
    assert np.abs(left - equipment.LEFT_RGB).max() <= COLOUR_TOLERANCE, left
    assert np.abs(right - equipment.RIGHT_RGB).max() <= COLOUR_TOLERANCE, right
    assert page.errors == []


def test_the_frame_rate_can_be_changed_while_a_clip_plays(live_server, page, equipment_data):
    open_viewer(page, f"{live_server.url}/viewer/{equipment_data['cine']}/")
    press(page, '[data-action="cine"]')
    page.fill("[data-fps]", "5")
    page.dispatch_event("[data-fps]", "change")
    first = current_index(page)
    page.wait_for_timeout(1000)
    # About five frames a second now; at 25 it would have gone round the clip three times.
    steps = (current_index(page) - first) % FRAMES
    assert 2 <= steps <= 7, steps
    press(page, '[data-action="cine"]')


@pytest.mark.parametrize("name", list(COLOUR_BUILDERS))
def test_colour_images_are_shown_in_their_colours(live_server, page, equipment_data, name):
    open_viewer(page, f"{live_server.url}/viewer/{equipment_data['colour'][name]}/")
    left, right = sample(page, [LEFT, RIGHT])
    assert np.abs(left - equipment.LEFT_RGB).max() <= COLOUR_TOLERANCE, (name, left)
    assert np.abs(right - equipment.RIGHT_RGB).max() <= COLOUR_TOLERANCE, (name, right)
    assert page.errors == []


def test_a_video_series_says_it_is_a_video(live_server, page, equipment_data):
    # The page's early request for the first frame is refused for a video (406, no frames to
    # give); that refusal must not escape as an unhandled rejection once the stand-in is painted.
    with page.expect_response(lambda response: response.url.endswith("/frames/1"), timeout=30_000) as frame:
        page.goto(f"{live_server.url}/viewer/{equipment_data['video']}/")
    assert frame.value.status == 406
    status = page.locator('[data-pane="0"] [data-status]')
    status.filter(has_text="视频").wait_for(timeout=30_000)
    page.evaluate("() => new Promise((settled) => setTimeout(settled, 100))")
    assert page.errors == []
