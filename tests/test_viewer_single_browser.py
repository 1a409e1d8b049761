"""One image on Cornerstone's CPU path, in every photometric interpretation a township sends:
a MONOCHROME1 CR, RGB and YBR_FULL_422 JPEG stills (an ultrasound still, an endoscopy-like
photo), PALETTE COLOR with 8- and 16-bit LUT entries. Each series of one image is drawn on the
CPU without any WebGL context, whatever its size, and read there as on WebGL: its own colours
or greys, window/level, invert, rotation and flips, reset, zoom, a length in millimetres (or
in centimetres by an ultrasound region's calibration). A MONOCHROME1 series of two images and
an ultrasound clip go to WebGL and are read there."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ComputedRadiographyImageStorage, generate_uid

from facilities.models import ExamKind, User
from tests import equipment
from tests.browser import press, session_context, watched_page
from tests.factories import make_dataset, make_facility, make_modality, make_user
from tests.test_viewer_browser import (
    COUNT_WEBGL_CONTEXTS,
    button_drag,
    drag,
    ingest,
    linear_window,
    on_cpu,
    open_viewer,
    overlay,
    settle,
    shown_window,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CR_SIZE = 256
# A MONOCHROME1 radiograph also at the size that stayed on the CPU before every single image did.
CR_LARGE = 1040
CR_SPACING = 0.2
CR_CENTRE, CR_WIDTH = 2000, 4000
# Gray levels may differ from the formula by rounding and sampling; colours by JPEG's loss.
TOLERANCE = 3
COLOUR_TOLERANCE = 10
PHOTO_ROWS, PHOTO_COLUMNS = 1040, 1100
US_DELTA_CM = 0.02


def cr_values(column: int, row: int, size: int) -> int:
    """The CR's stored value at an image point: 4 x 4 blocks, 200 apart across, 1000 down."""
    return (row * 4 // size) * 1000 + (column * 4 // size) * 200


def cr_points(size: int) -> list[tuple[int, int]]:
    """The centres of the CR's blocks in its left and right halves."""
    block = size // 4
    return [(column + block // 2, row + block // 2) for row in range(0, size, block) for column in (0, size // 2)]


def cr_monochrome1(
    study_uid: str | None = None, series_uid: str | None = None, number: int = 1, size: int = CR_SIZE
) -> Dataset:
    """A computed radiograph stored MONOCHROME1 (PS3.3 C.7.6.3.1.2: the minimum value is shown
    white), with a pixel spacing, so that lengths are in millimetres."""
    ds = make_dataset(
        sop_class_uid=ComputedRadiographyImageStorage,
        modality="CR",
        rows=size,
        columns=size,
        study_uid=study_uid,
        series_uid=series_uid,
        instance_number=number,
        patient_id="P400",
        patient_name="Qian^Qi",
    )
    del ds.RescaleIntercept
    del ds.RescaleSlope
    ds.PhotometricInterpretation = "MONOCHROME1"
    rows, columns = np.mgrid[0:size, 0:size]
    ds.PixelData = ((rows * 4 // size) * 1000 + (columns * 4 // size) * 200).astype(np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = CR_CENTRE, CR_WIDTH
    ds.PixelSpacing = [CR_SPACING, CR_SPACING]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    return ds


def with_ultrasound_region(ds: Dataset) -> Dataset:
    """One region over the whole image, calibrated as a B-mode tissue region is (PS3.3
    C.8.5.5.1: 0.02 cm a pixel across and down), so that lengths are in centimetres."""
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = US_DELTA_CM
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    return ds


def measure_length(page, start: tuple[int, int], end: tuple[int, int]) -> dict[str, Any]:
    """A length drawn with the left button's tool between two image pixels, fitted first."""
    press(page, '[data-action="fit"]')
    page.click('[data-tool="Length"]')
    drag(page, start, end)
    page.wait_for_function("() => window.yunyingViewer.viewers[0].measurements().some((m) => m.length)")
    (length,) = page.evaluate("window.yunyingViewer.viewers[0].measurements()")
    return length


def endoscopy_photo() -> Dataset:
    """A large colour photograph (an endoscopy still as VL Endoscopic Image Storage sends
    it, RGB), larger than 1024 x 1024."""
    ds = equipment.us_single_rgb(PHOTO_ROWS, PHOTO_COLUMNS)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.1"
    ds.Modality = "ES"
    return ds


# One image each, grey or colour, and where the two colour halves are sampled.
SINGLE = {
    "cr-monochrome1": cr_monochrome1,
    "cr-monochrome1-large": lambda: cr_monochrome1(size=CR_LARGE),
    "us-rgb": lambda: with_ultrasound_region(equipment.us_single_rgb()),
    "us-ybr-full-422-jpeg": lambda: equipment.us_ybr_full_422_jpeg(frames=1),
    "palette-16-bit": equipment.us_palette,
    "palette-8-bit": lambda: equipment.us_palette(entry_bits=8),
    "endoscopy-photo": endoscopy_photo,
}
COLOUR_POINTS = {
    "us-rgb": [(16, 24), (48, 24)],
    "us-ybr-full-422-jpeg": [(16, 24), (48, 24)],
    "palette-16-bit": [(16, 24), (48, 24)],
    "palette-8-bit": [(16, 24), (48, 24)],
    "endoscopy-photo": [(275, 520), (825, 520)],
}


@pytest.fixture
def single_data(transactional_db, tmp_path) -> dict[str, Any]:
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo")
    console = make_modality(township, ExamKind.DR, "XUANWO_DR")
    studies = {}
    for name, build in SINGLE.items():
        ds = build()
        ingest(ds, tmp_path, console)
        studies[name] = ds.StudyInstanceUID
    # Two views of one chest in one series (PA and lateral, as a CR reader sends them).
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in (1, 2):
        ingest(cr_monochrome1(study_uid, series_uid, number), tmp_path, console)
    studies["cr-two-views"] = study_uid
    clip = with_ultrasound_region(equipment.us_cine())
    ingest(clip, tmp_path, console)
    studies["us-clip"] = clip.StudyInstanceUID
    client = Client()
    client.force_login(technologist)
    return {"studies": studies, "session": client.cookies[settings.SESSION_COOKIE_NAME].value}


@pytest.fixture
def page(live_server, single_data, chromium) -> Any:
    page = watched_page(session_context(chromium, live_server.url, single_data["session"]))
    page.add_init_script(COUNT_WEBGL_CONTEXTS)
    return page


def shown(page, points: list[tuple[int, int]]) -> np.ndarray:
    settle(page)
    pixels = page.evaluate("(points) => window.yunyingViewer.viewers[0].panes[0].sample(points)", points)
    return np.array(pixels, dtype=float)[:, :3]


def page_point(page, point: tuple[int, int]) -> list[float]:
    return page.evaluate("(p) => window.yunyingViewer.viewers[0].panes[0].pagePoint(p)", list(point))


def expected(name: str, points: list[tuple[int, int]], centre: float, width: float, invert: bool) -> np.ndarray:
    """What the reader should see: a MONOCHROME1 grey through the window, its minimum white;
    a colour channel by channel through the window (the file's own colours at the default)."""
    if name.startswith("cr-"):
        size = CR_LARGE if name.endswith("-large") else CR_SIZE
        stored = np.array([cr_values(*point, size) for point in points], dtype=float)
        grey = 255 - linear_window(stored, centre, width)
        values = np.repeat(grey[:, None], 3, axis=1)
    else:
        half = (PHOTO_COLUMNS if name == "endoscopy-photo" else 64) // 2
        colours = [equipment.LEFT_RGB if column < half else equipment.RIGHT_RGB for column, _ in points]
        values = linear_window(np.array(colours, dtype=float), centre, width)
    return 255 - values if invert else values


def points_for(name: str) -> list[tuple[int, int]]:
    if name.startswith("cr-"):
        return cr_points(CR_LARGE if name.endswith("-large") else CR_SIZE)
    return COLOUR_POINTS[name]


def read_the_image(page, name: str) -> None:
    """Window/level, invert, rotation and flips, reset and zoom, each checked on the canvas."""
    points = points_for(name)
    tolerance = TOLERANCE if name.startswith("cr-") else COLOUR_TOLERANCE
    centre, width = shown_window(page)
    assert np.abs(shown(page, points) - expected(name, points, centre, width, False)).max() <= tolerance
    # The file's own look is not the reader's inversion: no 反相 in the corner.
    assert "反相" not in overlay(page, "br")

    # Window/level with the left button's tool: narrower, and shown as it says.
    x, y = page_point(page, points[0])
    button_drag(page, (x + 40, y), (x - 20, y + 30), "left")
    dragged = shown_window(page)
    assert dragged[1] < width
    assert np.abs(shown(page, points) - expected(name, points, *dragged, False)).max() <= tolerance
    press(page, '[data-action="invert"]')
    assert np.abs(shown(page, points) - expected(name, points, *dragged, True)).max() <= tolerance
    assert "反相" in overlay(page, "br")

    # Rotation and flips: the same image pixels keep their values wherever they are drawn.
    before = page_point(page, points[-1])
    press(page, '[data-action="flip-h"]')
    press(page, '[data-action="rotate"]')
    assert np.abs(np.array(page_point(page, points[-1])) - np.array(before)).max() > 20
    assert np.abs(shown(page, points) - expected(name, points, *dragged, True)).max() <= tolerance
    assert "90°" in overlay(page, "br") and "水平翻转" in overlay(page, "br")

    # Reset: the file's window and look, upright, unflipped, fitted.
    press(page, '[data-action="reset"]')
    assert np.abs(shown(page, points) - expected(name, points, centre, width, False)).max() <= tolerance
    presentation = page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].viewport.getViewPresentation()")
    assert presentation["rotation"] == 0 and presentation["flipHorizontal"] is False
    assert "反相" not in overlay(page, "br") and "100%" in overlay(page, "br")

    # Zoom with the right button: the image under the pointer keeps its values.
    x, y = page_point(page, points[0])
    button_drag(page, (x, y), (x, y + 80), "right")
    zoom = page.evaluate("() => window.yunyingViewer.viewers[0].panes[0].zoom()")
    assert zoom > 1.2
    assert f"{round(zoom * 100)}%" in overlay(page, "br")
    assert np.abs(shown(page, points[:1]) - expected(name, points[:1], centre, width, False)).max() <= tolerance


@pytest.mark.parametrize("name", list(SINGLE))
def test_a_single_image_is_read_on_the_cpu_without_any_webgl(live_server, page, single_data, name):
    open_viewer(page, f"{live_server.url}/viewer/{single_data['studies'][name]}/")
    # Reported whole while drawn by the CPU path, small or large, grey or colour: the move to
    # software WebGL (0.5-1.1 s of the page's CPU at any size) is not made.
    assert on_cpu(page) == {"cpu": True, "contexts": 0}
    read_the_image(page, name)
    if name.startswith("cr-"):
        # A length in millimetres: 192 pixels of 0.2 mm.
        length = measure_length(page, (32, 160), (224, 160))
        assert abs(length["length"] - 192 * CR_SPACING) < 0.5
        assert length["unit"] == "mm"
    if name == "us-rgb":
        # In centimetres, by the ultrasound region's calibration: 48 pixels of 0.02 cm.
        length = measure_length(page, (8, 24), (56, 24))
        assert abs(length["length"] - 48 * US_DELTA_CM) < 0.05
        assert length["unit"] == "cm US Region"
    assert on_cpu(page) == {"cpu": True, "contexts": 0}
    assert page.errors == []


def test_a_monochrome1_series_of_two_is_read_on_webgl_as_the_file_says(live_server, page, single_data):
    open_viewer(page, f"{live_server.url}/viewer/{single_data['studies']['cr-two-views']}/")
    # Two images scroll on WebGL; the move from the CPU's first image keeps MONOCHROME1's look.
    assert on_cpu(page) == {"cpu": False, "contexts": 1}
    read_the_image(page, "cr-two-views")
    press(page, '[data-action="reset"]')
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("End")
    page.wait_for_function("() => window.yunyingViewer.viewers[0].panes[0].viewport.getCurrentImageIdIndex() === 1")
    centre, width = shown_window(page)
    points = cr_points(CR_SIZE)
    assert np.abs(shown(page, points) - expected("cr-", points, centre, width, False)).max() <= TOLERANCE
    assert page.errors == []


def test_an_ultrasound_clip_is_read_on_webgl(live_server, page, single_data):
    open_viewer(page, f"{live_server.url}/viewer/{single_data['studies']['us-clip']}/")
    assert on_cpu(page) == {"cpu": False, "contexts": 1}
    # Frame 1's bar (250) in the first eighth, the rest 40.
    points = [(4, 24), (36, 24)]
    centre, width = shown_window(page)
    values = np.array([250.0, 40.0])
    assert np.abs(shown(page, points)[:, 0] - linear_window(values, centre, width)).max() <= TOLERANCE
    press(page, '[data-action="invert"]')
    assert np.abs(shown(page, points)[:, 0] - (255 - linear_window(values, centre, width))).max() <= TOLERANCE
    press(page, '[data-action="flip-h"]')
    press(page, '[data-action="rotate"]')
    assert np.abs(shown(page, points)[:, 0] - (255 - linear_window(values, centre, width))).max() <= TOLERANCE
    press(page, '[data-action="reset"]')
    assert np.abs(shown(page, points)[:, 0] - linear_window(values, centre, width)).max() <= TOLERANCE
    assert "反相" not in overlay(page, "br") and "100%" in overlay(page, "br")
    length = measure_length(page, (8, 24), (56, 24))
    assert abs(length["length"] - 48 * US_DELTA_CM) < 0.05
    assert length["unit"] == "cm US Region"
    assert page.errors == []
