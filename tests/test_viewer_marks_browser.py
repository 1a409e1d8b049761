"""Key images and measurements in a real headless Chromium, on the reader's workstation at
1366x768: a length drawn with the mouse and the image marked as key are saved to the study
(a KOS and a GSPS), and when the page is opened again the key image is in the strip and
marked on the image, and the length is drawn where it was. With YUNYING_SCREENS set to a
folder, the states are saved there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

from cloudpacs import keyobjects
from cloudpacs.models import Instance, Study
from consults.models import Consult
from facilities.models import ExamKind, User
from tests.browser import BUILT_VIEWER, CHROMIUM, CHROMIUM_ARGS
from tests.dicomweb_support import ingest
from tests.factories import PASSWORD, make_consult, make_dataset, make_facility, make_modality, make_user
from tests.test_reading_workstation_browser import Screens, box, ingest_series, stacked

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AT_FOURTH = "() => window.yunyingViewer.viewers[0].panes[0].viewport.getCurrentImageIdIndex() === 3"


@pytest.fixture
def case(transactional_db, tmp_path) -> dict[str, Any]:
    make_facility("COUNTY", township=False, name="汉阴县人民医院", short_name="县医院")
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡")
    ct = make_modality(township, ExamKind.CT, "XUANWO_CT")
    reader = make_user(User.Role.RADIOLOGIST, None, username="dr_zhao", display_name="赵医生", is_senior=True)
    study_uid = generate_uid()
    series = ingest_series(tmp_path, ct, study_uid=study_uid, number=1, description="Chest 5mm", slices=10, spacing=5)
    study = Study.objects.get(study_uid=study_uid)
    consult = make_consult(township, study, radiologist=reader, status=Consult.Status.OPENED)
    return {"consult": str(consult.uuid), "study": study_uid, "series": series}


def open_reading_page(browser, live_server, case) -> Any:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "dr_zhao")
    page.fill("#id_password", PASSWORD)
    page.click("button.primary")
    page.wait_for_load_state()
    page.goto(f"{live_server.url}/reading/{case['consult']}/")
    page.wait_for_load_state("load")
    stacked(page, [0])
    page.evaluate("() => window.yunyingViewer.viewers[0].marksReady")
    return page


def draw_length(page, start_pixel: list[int], end_pixel: list[int]) -> None:
    """A length drawn with the mouse in the first pane, between two image pixels."""
    page.click('[data-tool="Length"]')
    start, end = page.evaluate(
        "([a, b]) => { const p = window.yunyingViewer.viewers[0].panes[0]; return [p.pagePoint(a), p.pagePoint(b)]; }",
        [start_pixel, end_pixel],
    )
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, start[1], steps=4)
    page.mouse.move(*end, steps=4)
    page.mouse.up()


def test_a_key_image_and_a_length_are_saved_to_the_study_and_shown_again(live_server, case):
    from playwright.sync_api import sync_playwright

    assert BUILT_VIEWER.exists(), "the viewer is not built: run scripts/build-viewer.sh"
    screens = Screens("1366x768")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = open_reading_page(browser, live_server, case)
            viewer = page.locator("[data-yunying-viewer]")
            # The fourth slice, marked as key with K.
            page.click('[data-pane="0"]')
            viewer.focus()
            for _ in range(3):
                page.keyboard.press("ArrowDown")
            page.wait_for_function(AT_FOURTH)
            page.keyboard.press("k")
            assert page.get_attribute('[data-action="key-image"]', "aria-pressed") == "true"
            assert page.locator('[data-pane="0"] .yv-key-mark').is_visible()
            # A length across the image, 10 to 50 pixels along row 32 (1 mm pixels).
            draw_length(page, [10, 32], [50, 32])
            drawn = page.evaluate("() => window.yunyingViewer.viewers[0].marks.measurements()")
            assert [m["tool"] for m in drawn] == ["Length"]
            assert drawn[0]["text"].endswith("mm")
            screens.take(page, "marks-1-drawn")

            with page.expect_response(lambda r: "/marks/save/" in r.url) as saved:
                page.click('[data-action="save-marks"]')
            assert saved.value.status == 200, saved.value.text()
            page.wait_for_function("() => !document.querySelector('[data-action=\"save-marks\"]').disabled")
            assert page.locator(".yv-key-strip .yv-key-thumb").count() == 1
            screens.take(page, "marks-2-saved")

            # Opened again: the key image in the strip and marked, the length where it was.
            page.reload()
            page.wait_for_load_state("load")
            stacked(page, [0])
            page.evaluate("() => window.yunyingViewer.viewers[0].marksReady")
            page.wait_for_function("() => window.yunyingViewer.viewers[0].marks.measurements().length === 1")
            assert page.locator(".yv-key-strip .yv-key-thumb").count() == 1
            thumb = page.locator(f'.yv-thumb[data-series-uid="{case["series"]}"] .yv-thumb-keys')
            assert thumb.inner_text() == "★1"
            (length,) = page.evaluate("() => window.yunyingViewer.viewers[0].marks.measurements()")
            assert length["tool"] == "Length"
            (x1, y1), (x2, y2) = length["points"]
            assert abs(x1 - 10.5) < 1.5 and abs(x2 - 50.5) < 1.5 and abs(y1 - 32.5) < 1.5 and abs(y2 - 32.5) < 1.5
            # The strip takes the reader to the key image, where the length is drawn.
            assert page.locator('[data-pane="0"] .yv-key-mark').is_hidden()
            page.click(".yv-key-strip .yv-key-thumb")
            page.wait_for_function(AT_FOURTH)
            # The pane marks a key image when it draws it, a render after the index moves.
            page.locator('[data-pane="0"] .yv-key-mark').wait_for(state="visible", timeout=10_000)
            # Cornerstone draws it (a line in the pane's SVG layer) with its length (40 pixels of 1 mm).
            page.wait_for_function(
                "() => document.querySelectorAll('[data-pane=\"0\"] .svg-layer line').length >= 1"
                " && /mm/.test(document.querySelector('[data-pane=\"0\"] .svg-layer').textContent)"
            )
            label = page.locator('[data-pane="0"] .svg-layer').text_content()
            value = re.search(r"([0-9.]+) mm", label)
            assert value and abs(float(value.group(1)) - 40) < 1.5, label
            screens.take(page, "marks-3-reopened")
            assert page.errors == []
        finally:
            browser.close()
    kept = Instance.objects.filter(series__study__study_uid=case["study"])
    assert kept.filter(sop_class_uid=keyobjects.KOS_CLASS).count() == 1
    assert kept.filter(sop_class_uid=keyobjects.GSPS_CLASS).count() == 1


@pytest.fixture
def radiograph_case(transactional_db, tmp_path: Path) -> dict[str, Any]:
    """A consult on one chest radiograph of 1400 x 1400 pixels of 0.2 mm: an image the
    viewer keeps on Cornerstone's CPU path (over 1024 x 1024, one image)."""
    make_facility("COUNTY", township=False, name="汉阴县人民医院", short_name="县医院")
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡")
    dr = make_modality(township, ExamKind.DR, "XUANWO_DR")
    reader = make_user(User.Role.RADIOLOGIST, None, username="dr_zhao", display_name="赵医生", is_senior=True)
    ds = make_dataset(
        sop_class_uid=DigitalXRayImageStorageForPresentation,
        modality="DX",
        rows=1400,
        columns=1400,
        patient_id="P600",
        patient_name="Wu^Ba=吴八",
        character_set="ISO_IR 192",
        StudyDescription="胸部正位",
    )
    ds.PixelSpacing = [0.2, 0.2]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.PixelData = (np.add.outer(np.arange(1400), np.arange(1400)) % 4096).astype(np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ingest(ds, dr, tmp_path)
    study = Study.objects.get(study_uid=ds.StudyInstanceUID)
    consult = make_consult(township, study, radiologist=reader, status=Consult.Status.OPENED)
    return {"consult": str(consult.uuid), "study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID)}


def test_a_radiographs_key_image_and_length_are_saved_and_shown_again_on_the_cpu_path(live_server, radiograph_case):
    """The reader's day on a radiograph the viewer keeps on the CPU: marked as key, a length
    drawn, both saved (a KOS and a GSPS) and drawn again when the page is opened again."""
    from playwright.sync_api import sync_playwright

    on_cpu = "() => { const p = window.yunyingViewer.viewers[0].panes[0]; return p.keptOnCpu && p.onCpu; }"
    assert BUILT_VIEWER.exists(), "the viewer is not built: run scripts/build-viewer.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = open_reading_page(browser, live_server, radiograph_case)
            assert page.evaluate(on_cpu)
            page.click('[data-pane="0"]')
            page.locator("[data-yunying-viewer]").focus()
            page.keyboard.press("k")
            assert page.get_attribute('[data-action="key-image"]', "aria-pressed") == "true"
            # 200 pixels of 0.2 mm along row 700.
            draw_length(page, [500, 700], [700, 700])
            (drawn,) = page.evaluate("() => window.yunyingViewer.viewers[0].marks.measurements()")
            assert drawn["tool"] == "Length" and drawn["text"].endswith("mm")
            with page.expect_response(lambda r: "/marks/save/" in r.url) as saved:
                page.click('[data-action="save-marks"]')
            assert saved.value.status == 200, saved.value.text()
            page.wait_for_function("() => !document.querySelector('[data-action=\"save-marks\"]').disabled")

            page.reload()
            page.wait_for_load_state("load")
            stacked(page, [0])
            page.evaluate("() => window.yunyingViewer.viewers[0].marksReady")
            page.wait_for_function("() => window.yunyingViewer.viewers[0].marks.measurements().length === 1")
            assert page.evaluate(on_cpu)
            assert page.locator(".yv-key-strip .yv-key-thumb").count() == 1
            page.locator('[data-pane="0"] .yv-key-mark').wait_for(state="visible", timeout=10_000)
            (length,) = page.evaluate("() => window.yunyingViewer.viewers[0].marks.measurements()")
            (x1, y1), (x2, y2) = length["points"]
            assert abs(x1 - 500.5) < 3 and abs(x2 - 700.5) < 3 and abs(y1 - 700.5) < 3 and abs(y2 - 700.5) < 3
            page.wait_for_function(
                "() => /mm/.test(document.querySelector('[data-pane=\"0\"] .svg-layer')?.textContent || '')"
            )
            label = page.locator('[data-pane="0"] .svg-layer').text_content()
            value = re.search(r"([0-9.]+) mm", label)
            assert value and abs(float(value.group(1)) - 40) < 1.5, label
            assert page.errors == []
        finally:
            browser.close()
    kept = Instance.objects.filter(series__study__study_uid=radiograph_case["study"])
    assert kept.filter(sop_class_uid=keyobjects.KOS_CLASS).count() == 1
    assert kept.filter(sop_class_uid=keyobjects.GSPS_CLASS).count() == 1


def test_the_toolbar_is_one_row_at_1366x768_and_the_rest_is_under_more(live_server, case):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = open_reading_page(browser, live_server, case)
            toolbar = box(page, "[data-toolbar]")
            assert toolbar["height"] < 40
            tops = page.evaluate(
                "() => [...document.querySelectorAll('[data-toolbar] > :not([hidden])')]"
                ".map((e) => Math.round(e.getBoundingClientRect().top))"
            )
            assert len(set(tops)) == 1, tops
            pane = box(page, '[data-pane="0"]')
            assert pane["height"] >= 0.8 * 768
            # Whatever did not fit is one click away, and works from there.
            more = page.locator("[data-more]")
            assert more.is_visible()
            more.click()
            assert page.locator("[data-more-menu]").is_visible()
            Screens("1366x768").take(page, "marks-4-more")
            page.locator('[data-more-menu] [data-action="rotate"]').click()
            rotation = page.evaluate(
                "() => window.yunyingViewer.viewers[0].panes[0].viewport.getViewPresentation().rotation"
            )
            assert rotation == 90
            # The report panel collapsed: the row has room, and what fits comes back to it.
            under = page.evaluate("() => document.querySelector('[data-more-menu]').children.length")
            page.click("#panel-toggle")
            page.wait_for_function("(n) => document.querySelector('[data-more-menu]').children.length < n", arg=under)
            Screens("1366x768").take(page, "marks-5-collapsed")
            assert (
                len(
                    set(
                        page.evaluate(
                            "() => [...document.querySelectorAll('[data-toolbar] > :not([hidden])')]"
                            ".map((e) => Math.round(e.getBoundingClientRect().top))"
                        )
                    )
                )
                == 1
            )
            assert page.errors == []
        finally:
            browser.close()
