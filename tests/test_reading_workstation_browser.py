"""The reader's workstation in a real headless Chromium, at 1366x768 and 1920x1080: the
images take the screen beside a report panel that collapses, a full-screen mode, the
layouts 1x1, 1x2 and 2x2 hung by series, and a prior study beside the current one with
their scrolling linked. With YUNYING_SCREENS set to a folder, each state is saved there."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import generate_uid

from cloudpacs.models import Study
from cloudpacs.services import ingest_instance
from consults.models import Consult
from facilities.models import ExamKind, User
from tests.browser import choose, watched_page
from tests.factories import PASSWORD, make_consult, make_dataset, make_facility, make_modality, make_user, write_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZES = {"1366x768": (1366, 768), "1920x1080": (1920, 1080)}
SIZE = 64


def ingest_series(
    directory: Path,
    modality,
    *,
    study_uid: str,
    number: int,
    description: str,
    slices: int,
    spacing: float,
    **tags: Any,
) -> str:
    """One axial CT series of `slices` images `spacing` mm apart, from z = 0 downwards."""
    series_uid = generate_uid()
    for index in range(slices):
        ds = make_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=index + 1,
            rows=SIZE,
            columns=SIZE,
            patient_id="P500",
            patient_name="Zhou^Qi=周七",
            character_set="ISO_IR 192",
            SeriesNumber=number,
            SeriesDescription=description,
            StudyDescription="胸部 CT 平扫",
            **tags,
        )
        ds.PixelSpacing = [1, 1]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-32, -32, -spacing * index]
        ds.SliceThickness = spacing
        ds.PixelData = (np.full((SIZE, SIZE), 1024 + 20 * index + 200 * number)).astype(np.uint16).tobytes()
        path = write_dataset(ds, directory / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=modality,
        )
    return series_uid


@pytest.fixture
def workstation(transactional_db, tmp_path) -> dict[str, Any]:
    # The data goes in before Playwright starts: its event loop makes Django refuse ORM calls.
    make_facility("COUNTY", township=False, name="汉阴县人民医院", short_name="县医院")
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡")
    ct = make_modality(township, ExamKind.CT, "XUANWO_CT")
    reader = make_user(User.Role.RADIOLOGIST, None, username="dr_zhao", display_name="赵医生", is_senior=True)
    current_uid, prior_uid = generate_uid(), generate_uid()
    series = [
        ingest_series(tmp_path, ct, study_uid=current_uid, number=1, description="Chest 5mm", slices=10, spacing=5),
        ingest_series(tmp_path, ct, study_uid=current_uid, number=2, description="Lung 5mm", slices=10, spacing=5),
        ingest_series(tmp_path, ct, study_uid=current_uid, number=3, description="Bone 5mm", slices=10, spacing=5),
    ]
    # The prior: a year earlier, thinner slices (2.5 mm), its series in another order.
    old = {"study_date": date(2024, 9, 1)}
    ingest_series(tmp_path, ct, study_uid=prior_uid, number=4, description="Lung 5mm", slices=20, spacing=2.5, **old)
    prior_chest = ingest_series(
        tmp_path, ct, study_uid=prior_uid, number=7, description="Chest 5mm", slices=20, spacing=2.5, **old
    )
    current, prior = Study.objects.get(study_uid=current_uid), Study.objects.get(study_uid=prior_uid)
    consult = make_consult(township, current, radiologist=reader, status=Consult.Status.OPENED)
    make_consult(township, prior, status=Consult.Status.SIGNED)
    return {"consult": str(consult.uuid), "current": current_uid, "prior": prior_uid, "series": series,
            "prior_chest": prior_chest}  # fmt: skip


class Screens:
    """Saves what the page looks like when YUNYING_SCREENS names a folder."""

    def __init__(self, size: str) -> None:
        folder = os.environ.get("YUNYING_SCREENS")
        self.folder = Path(folder) if folder else None
        self.size = size

    def take(self, page, name: str) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(self.folder / f"{name}-{self.size}.png"))


@pytest.fixture
def reading_page(live_server, workstation, chromium, request):
    size = getattr(request, "param", "1366x768")
    width, height = SIZES[size]
    page = watched_page(chromium.new_context(viewport={"width": width, "height": height}, locale="zh-CN"))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.size = size
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "dr_zhao")
    page.fill("#id_password", PASSWORD)
    page.click("button.primary")
    page.wait_for_load_state()
    page.goto(f"{live_server.url}/reading/{workstation['consult']}/")
    page.wait_for_load_state("load")
    stacked(page, [0])
    return page


def stacked(page, panes: list[int]) -> None:
    """Each of these panes has its whole stack in the cache."""
    for index in panes:
        page.wait_for_function(
            "(i) => { const p = window.yunyingViewer?.viewers[0].panes[i];"
            " return p && p.imageIds.length > 0 && p.loaded + p.failed === p.imageIds.length; }",
            arg=index,
            timeout=60_000,
        )


def box(page, selector: str) -> dict[str, float]:
    return page.locator(selector).first.bounding_box()


def shown(page) -> list[dict[str, Any]]:
    """What each pane shows: its series and image, or None when hidden or empty."""
    return page.evaluate(
        """() => window.yunyingViewer.viewers[0].panes.map((p) => p.section.hidden || !p.seriesUid ? null : {
            study: p.studyUid, series: p.seriesUid,
            index: p.enabled ? p.viewport.getCurrentImageIdIndex() : null, total: p.imageIds.length})"""
    )


@pytest.mark.parametrize("reading_page", list(SIZES), indirect=True)
def test_the_images_take_the_screen_beside_a_report_panel_that_collapses(reading_page, workstation):
    page = reading_page
    width, height = SIZES[page.size]
    screens = Screens(page.size)
    screens.take(page, "workstation-1-reading")
    viewer = box(page, "[data-yunying-viewer]")
    panel = box(page, "#reading-panel")
    # The viewer reaches the bottom of the window, the page does not scroll, and the report
    # with its buttons is the panel to its right.
    assert viewer["y"] + viewer["height"] >= height - 12
    assert page.evaluate("() => document.documentElement.scrollHeight - window.innerHeight") <= 1
    assert panel["x"] >= viewer["x"] + viewer["width"]
    assert panel["x"] + panel["width"] <= width + 1
    assert viewer["width"] >= 0.6 * width
    assert page.locator("#report-form").is_visible()
    pane = box(page, '[data-pane="0"]')
    # The site's header, the case's one line and the viewer's toolbar (one row) above it.
    assert pane["width"] >= 0.5 * width and pane["height"] >= 0.8 * height
    assert box(page, "[data-toolbar]")["height"] < 40

    page.click("#panel-toggle")
    assert page.locator("#reading-panel").is_hidden()
    page.wait_for_function(
        "(w) => document.querySelector('[data-yunying-viewer]').getBoundingClientRect().width > w", arg=viewer["width"]
    )
    assert box(page, "[data-yunying-viewer]")["width"] >= width - 30
    # The canvas follows the pane (Cornerstone resized it).
    page.wait_for_function(
        """() => { const p = window.yunyingViewer.viewers[0].panes[0];
                   return Math.abs(p.viewport.getCanvas().clientWidth - p.section.clientWidth) <= 2; }"""
    )
    screens.take(page, "workstation-2-panel-collapsed")
    # The reader's choice holds on the next page.
    page.reload()
    page.wait_for_load_state("load")
    assert page.locator("#reading-panel").is_hidden()
    page.click("#panel-toggle")
    assert page.locator("#report-form").is_visible()
    assert page.errors == []


def test_full_screen_gives_the_viewer_the_whole_window_and_escape_leaves_it(reading_page):
    page = reading_page
    page.click('[data-action="fullscreen"]')
    page.wait_for_function("() => document.querySelector('[data-yunying-viewer]').classList.contains('is-fullscreen')")
    viewer = box(page, "[data-yunying-viewer]")
    assert viewer["x"] == 0 and viewer["y"] == 0
    assert viewer["width"] >= SIZES["1366x768"][0] - 1 and viewer["height"] >= SIZES["1366x768"][1] - 1
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('[data-yunying-viewer]').classList.contains('is-fullscreen')")
    assert box(page, "#reading-panel")["width"] > 300
    assert page.errors == []


def test_layouts_hang_the_studys_series_in_order(reading_page, workstation):
    page = reading_page
    screens = Screens(page.size)
    series = workstation["series"]
    assert [p and p["series"] for p in shown(page)] == [series[0], None, None, None]

    page.click('[data-layout="1x2"]')
    stacked(page, [0, 1])
    assert [p and p["series"] for p in shown(page)] == [series[0], series[1], None, None]
    left, right = box(page, '[data-pane="0"]'), box(page, '[data-pane="1"]')
    assert abs(left["y"] - right["y"]) < 1 and right["x"] > left["x"] + left["width"] - 1

    page.click('[data-layout="2x2"]')
    stacked(page, [0, 1, 2])
    # Three series in four panes: the fourth stays empty.
    assert [p and p["series"] for p in shown(page)] == [series[0], series[1], series[2], None]
    assert page.locator('[data-pane="3"]').is_visible()
    top, bottom = box(page, '[data-pane="0"]'), box(page, '[data-pane="2"]')
    assert bottom["y"] > top["y"] + top["height"] - 1
    assert "Bone 5mm" in page.locator('[data-pane="2"] [data-overlay="tr"]').inner_text()
    screens.take(page, "workstation-3-layout-2x2")

    # A thumbnail hangs its series in the active pane.
    page.click('[data-pane="3"]')
    page.click(f'.yv-thumb[data-series-uid="{series[0]}"]')
    stacked(page, [3])
    assert shown(page)[3]["series"] == series[0]

    page.click('[data-layout="1x1"]')
    assert [p and p["series"] for p in shown(page)] == [series[0], None, None, None]
    assert page.errors == []


def test_a_prior_opens_beside_the_current_study_and_scrolls_with_it(reading_page, workstation):
    page = reading_page
    screens = Screens(page.size)
    prior_row = page.locator(f'[data-prior-study="{workstation["prior"]}"]')
    # Its report is one click away, in a tab of its own.
    assert prior_row.locator("[data-prior-report]").get_attribute("target") == "_blank"
    prior_row.locator("[data-open-prior]").click()
    stacked(page, [0, 1])
    current, prior = shown(page)[:2]
    assert current["study"] == workstation["current"] and current["series"] == workstation["series"][0]
    # The prior's series beside the current one is the one that matches it (Chest 5mm), not
    # its first (Lung 5mm).
    assert prior["study"] == workstation["prior"] and prior["series"] == workstation["prior_chest"]
    assert "2024-09-01" in page.locator('[data-pane="1"] [data-overlay="tr"]').inner_text()
    assert page.locator('.yv-series-group[data-study="prior"] .yv-thumb').count() == 2

    # Linked: 10 mm down the current study (two 5 mm slices) is 10 mm down the prior (four
    # 2.5 mm slices).
    page.click('[data-pane="0"]')
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => window.yunyingViewer.viewers[0].panes[1].viewport.getCurrentImageIdIndex() === 4")
    assert [p["index"] for p in shown(page)[:2]] == [2, 4]
    screens.take(page, "workstation-4-prior")
    # Unlinked, each scrolls alone.
    page.click('[data-action="sync"]')
    page.locator("[data-yunying-viewer]").focus()
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => window.yunyingViewer.viewers[0].panes[0].viewport.getCurrentImageIdIndex() === 3")
    page.wait_for_timeout(200)
    assert shown(page)[1]["index"] == 4

    # No prior: back to one pane.
    choose(page, "select[data-prior]", "")
    assert [p and p["series"] for p in shown(page)] == [workstation["series"][0], None, None, None]
    assert page.errors == []
