"""In a real browser: a radiologist reads a normal chest radiograph (DR), fills the report
with the normal report in one click, inserts phrases at the cursor (by a click, by its
shortcut and Tab, by a search), and signs. With YUNYING_SCREENS set to a folder the steps
are saved there as pictures."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import DigitalXRayImageStorageForPresentation

from cloudpacs.services import ingest_instance
from consults.models import Consult, Phrase
from consults.services import open_consult_for_study
from facilities.models import ExamKind, User
from tests.browser import BUILT_VIEWER, launch
from tests.factories import PASSWORD, make_dataset, make_facility, make_modality, make_user, write_dataset

NIPPLES = "双侧乳头影重叠于下肺野。"
CLINICAL = "请结合临床。"
FOLLOW_UP = "建议定期复查。"


def chest_radiograph(size: int = 512) -> np.ndarray:
    """A chest-radiograph-like phantom (MONOCHROME2: air dark, bone bright): the body, two
    lungs, the mediastinum and heart, the spine."""
    rows, columns = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 300.0)
    image[((columns - 0.5) / 0.45) ** 2 + ((rows - 0.55) / 0.5) ** 2 < 1] = 2300
    for centre in (0.31, 0.69):
        image[((columns - centre) / 0.15) ** 2 + ((rows - 0.47) / 0.3) ** 2 < 1] = 900
    image[(np.abs(columns - 0.5) < 0.045) & (rows > 0.1)] = 3200
    image[((columns - 0.54) / 0.13) ** 2 + ((rows - 0.68) / 0.12) ** 2 < 1] = 2700
    return image


@pytest.fixture
def chest_dr(transactional_db, tmp_path):
    # The data goes in before Playwright starts: its event loop makes Django refuse ORM calls.
    make_facility("COUNTY", township=False, name="汉阴县人民医院", short_name="县医院", pinyin="Hanyin")
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo")
    modality = make_modality(township, ExamKind.DR, "XUANWO_DR")
    reader = make_user(User.Role.RADIOLOGIST, None, username="dr_li", display_name="李明", is_senior=True)
    Phrase.objects.create(owner=reader, shortcut="rt", text=NIPPLES)
    Phrase.objects.create(owner=reader, shortcut="jhlc", text=CLINICAL)
    Phrase.objects.create(shortcut="fc", text=FOLLOW_UP)  # the department's
    ds = make_dataset(
        sop_class_uid=DigitalXRayImageStorageForPresentation,
        modality="DX",
        rows=512,
        columns=512,
        patient_id="XW0101",
        patient_name="Wu^Chao=吴^超",
        character_set="ISO_IR 192",
        BodyPartExamined="CHEST",
        StudyDescription="胸部正位",
        ViewPosition="PA",
    )
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.WindowCenter, ds.WindowWidth = 1800, 3600
    ds.PixelSpacing = [0.7, 0.7]
    ds.PixelData = chest_radiograph().astype(np.uint16).tobytes()
    path = write_dataset(ds, tmp_path / "chest.dcm")
    study = ingest_instance(
        path,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        modality=modality,
    ).instance.series.study
    consult = open_consult_for_study(study)
    assert consult.kind == ExamKind.DR and consult.body_part_names == ""  # its part is the series'
    return consult


def screenshot(page, tmp_path: Path, name: str, selector: str = "") -> None:
    from PIL import Image

    folder = Path(os.environ.get("YUNYING_SCREENS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = page.locator(selector).screenshot() if selector else page.screenshot()
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(folder / f"{name}.png", optimize=True)


@pytest.mark.browser
def test_a_radiologist_signs_a_normal_chest_radiograph_from_its_template(live_server, chest_dr, tmp_path):
    from playwright.sync_api import sync_playwright

    assert BUILT_VIEWER.exists(), "the viewer is not built: run scripts/build-viewer.sh"
    reading = f"{live_server.url}/reading/{chest_dr.uuid}/"
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 768}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.goto(f"{live_server.url}/accounts/login/")
            page.fill("#id_username", "dr_li")
            page.fill("#id_password", PASSWORD)
            page.click("button.primary")
            page.wait_for_load_state()
            page.goto(reading)
            page.click("button[name='claim']")
            page.wait_for_selector("#report-form")
            page.wait_for_load_state("load")
            assert "胸部正位片（正常）" in page.locator("#normal-report-source").inner_text()
            assert page.locator("button[value='sign']").is_enabled()  # the script is ready

            # One click: the normal report for a chest radiograph.
            page.click("#normal-report")
            findings = page.input_value("#findings")
            assert findings.startswith("胸廓对称，气管居中。双肺纹理清晰")
            assert page.input_value("#impression") == "心、肺、膈未见明显异常。"

            # A phrase goes where the cursor is: after the lung fields' sentence.
            at = findings.index("双肺野内未见异常密度影。") + len("双肺野内未见异常密度影。")
            page.locator("#findings").evaluate("(area, at) => { area.focus(); area.setSelectionRange(at, at); }", at)
            page.click(f"#phrase-list button:has-text('{NIPPLES}')")
            assert page.input_value("#findings") == findings[:at] + NIPPLES + findings[at:]

            # Its shortcut then Tab, at the impression's end.
            page.locator("#impression").evaluate("area => { area.focus(); area.setSelectionRange(99, 99); }")
            page.keyboard.type("jhlc")
            page.keyboard.press("Tab")
            assert page.input_value("#impression") == "心、肺、膈未见明显异常。" + CLINICAL
            assert page.evaluate("() => document.activeElement.id") == "impression"

            # Searched (Alt+P), chosen with Enter: the department's phrase, at the cursor.
            page.keyboard.press("Alt+KeyP")
            assert page.evaluate("() => document.activeElement.id") == "phrase-search"
            page.keyboard.type("复查")
            assert page.locator("#phrase-list li:not([hidden])").count() == 1
            page.keyboard.press("Enter")
            assert page.input_value("#impression") == "心、肺、膈未见明显异常。" + CLINICAL + FOLLOW_UP
            screenshot(page, tmp_path, "report-texts-1-normal-chest-dr")
            screenshot(page, tmp_path, "report-texts-1-report-panel", "#report")

            page.click("button[value='sign']")
            page.wait_for_selector("#sign-confirm[open]")
            screenshot(page, tmp_path, "report-texts-2-confirm")
            page.click("#sign-confirm-ok")
            page.wait_for_selector("#report-impression")
            assert "已签发" in page.locator("#consult-status").inner_text()
            assert FOLLOW_UP in page.locator("#report-impression").inner_text()
            assert NIPPLES in page.locator("#report-findings").inner_text()
            screenshot(page, tmp_path, "report-texts-3-signed")
            assert [error for error in errors if "Content Security Policy" in error] == []
        finally:
            browser.close()

    chest_dr.refresh_from_db()
    assert chest_dr.status == Consult.Status.SIGNED
    assert chest_dr.report.impression == "心、肺、膈未见明显异常。" + CLINICAL + FOLLOW_UP
    assert chest_dr.report.signed_by.username == "dr_li"
