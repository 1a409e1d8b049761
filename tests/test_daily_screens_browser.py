"""Each role's working day in a real headless Chromium, at 1366x768 and 1920x1080: what
every page must show, and that it fits the screen.

The radiologist takes the next case from the worklist, reads it, signs after the
confirmation and goes on to the next; the township's technologist finds a patient by
pinyin initials, opens the signed report with its critical finding, the study and its
images; anyone with the printed report verifies it; the administrator reads the audit
trail and the ledger's admin. With YUNYING_SCREENS set to a folder (docs/screens), each
step is also saved there as a small PNG."""

from __future__ import annotations

import io
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.utils import timezone
from pydicom.uid import generate_uid

from billing.models import LedgerEntry, PriceSchedule
from cloudpacs.models import Study
from cloudpacs.services import ingest_instance
from consults import workflow
from consults.models import Consult, Priority
from consults.services import open_consult_for_study
from facilities.models import ExamKind, User
from facilities.services import audit
from tests.browser import watched_page
from tests.factories import (
    PASSWORD,
    make_county,
    make_dataset,
    make_modality,
    make_township,
    make_user,
    write_dataset,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZES = {"1366x768": (1366, 768), "1920x1080": (1920, 1080)}


def chest_slice(number: int, size: int = 192) -> np.ndarray:
    """A chest-like phantom in Hounsfield units: body, two lungs, a spine, a heart."""
    rows, columns = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), -1000.0)
    image[((columns - 0.5) / 0.46) ** 2 + ((rows - 0.52) / 0.36) ** 2 < 1] = 40
    for centre in (0.3, 0.7):
        image[((columns - centre) / 0.16) ** 2 + ((rows - 0.48) / (0.24 - number * 0.01)) ** 2 < 1] = -820
    image[((columns - 0.5) / 0.05) ** 2 + ((rows - 0.8) / 0.05) ** 2 < 1] = 700
    image[((columns - 0.55) / 0.12) ** 2 + ((rows - 0.55) / 0.1) ** 2 < 1] = 45
    return image


def ingest_study(directory: Path, modality, *, name: str, patient_id: str, sex: str, birth: str, **tags: Any) -> Study:
    study_uid, series_uid = generate_uid(), generate_uid()
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(1, 4):
        ds = make_dataset(
            study_uid=study_uid,
            series_uid=series_uid,
            instance_number=number,
            rows=192,
            columns=192,
            patient_id=patient_id,
            patient_name=name,
            character_set="ISO_IR 192",
            PatientSex=sex,
            PatientBirthDate=birth,
            BodyPartExamined="CHEST",
            StudyDescription="胸部 CT 平扫",
            **tags,
        )
        ds.PixelSpacing = [1.8, 1.8]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-170, -170, -5.0 * number]
        ds.SliceThickness = 5
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.PixelData = (chest_slice(number) + 1024).astype(np.uint16).tobytes()
        path = write_dataset(ds, directory / f"{ds.SOPInstanceUID}.dcm")
        ingest_instance(
            path,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=modality,
        )
    return Study.objects.get(study_uid=study_uid)


@pytest.fixture
def day(transactional_db, tmp_path) -> dict[str, Any]:
    # The data goes in before Playwright starts: its event loop makes Django refuse ORM calls.
    make_county()
    township = make_township()
    ct = make_modality(township, ExamKind.CT, "XUANWO_CT")
    reader = make_user(User.Role.RADIOLOGIST, None, username="dr_li", display_name="李明", is_senior=True)
    make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo", display_name="漩涡技师")
    admin = make_user(User.Role.ADMINISTRATOR, None, username="admin_zhao", display_name="赵管理员", is_staff=True)
    people = [
        ("Wu^Chao=吴^超", "XW0001", "M", "19610412", Priority.URGENT, "咳嗽两周，发热 3 天，体温 38.5 ℃。"),
        ("王^芳", "XW0002", "F", "19781103", Priority.EMERGENCY, "车祸后胸痛 1 小时，呼吸急促。"),
        ("Zhang^Wei=张^伟", "XW0003", "M", "19550220", Priority.ROUTINE, "体检发现肺结节，复查。"),
        ("Li^Na=李^娜", "XW0004", "F", "19900715", Priority.ROUTINE, "慢性咳嗽。"),
    ]
    consults = []
    for number, (name, patient_id, sex, birth, priority, history) in enumerate(people):
        study = ingest_study(
            tmp_path / patient_id,
            ct,
            name=name,
            patient_id=patient_id,
            sex=sex,
            birth=birth,
            AccessionNumber=f"XW2025{number:04d}",
        )
        consult = open_consult_for_study(study)
        Consult.objects.filter(pk=consult.pk).update(
            priority=priority,
            clinical_history=history,
            arrived_at=timezone.now() - timedelta(minutes=20 + 15 * number),
            due_at=timezone.now() + timedelta(hours=2 - number * 0.5),
        )
        consults.append(consult)
    # Yesterday's case of 张伟, already signed, with a critical finding the township has to see.
    done = consults[2]
    workflow.claim_consult(done, reader)
    workflow.sign_final(
        done,
        reader,
        "右肺上叶尖段见一实性结节，直径约 12 mm，边缘分叶，可见毛刺征，邻近胸膜牵拉。"
        "纵隔内未见肿大淋巴结，双侧胸腔未见积液。",
        "右肺上叶实性结节，考虑周围型肺癌可能，建议增强 CT 或穿刺活检进一步明确。",
    )
    workflow.flag_critical(done, reader, "右肺上叶占位，高度怀疑恶性，请尽快通知患者进一步检查。")
    schedule = PriceSchedule.objects.create(code="shaanxi-2021", name="陕西 2021", effective_from=date(2021, 1, 1))
    LedgerEntry.objects.create(
        consult=done,
        facility=township,
        exam_kind=ExamKind.CT,
        exam_date=done.exam_date,
        body_parts=1,
        schedule=schedule,
        county_price=180,
        township_price=150,
        saving=30,
    )
    audit("facilities.facility.changed", actor=admin, obj=township, via="admin", object=str(township))
    done.refresh_from_db()
    return {
        "township": str(township.uuid),
        "signed": str(done.uuid),
        "signed_study": done.study.study_uid,
        "token": done.report.verification.token,
        "wu": str(consults[0].uuid),
        "wang": str(consults[1].uuid),
    }


class Screens:
    """Saves each step, palette-compressed, when YUNYING_SCREENS names a folder."""

    def __init__(self, size: str) -> None:
        target = os.environ.get("YUNYING_SCREENS", "")
        self.folder = Path(target) if target else None
        self.size = size
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str) -> None:
        if self.folder is None:
            return
        from PIL import Image

        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        image.save(self.folder / f"{name}-{self.size}.png", optimize=True)


def fits(page) -> None:
    """Nothing runs off the side of the window."""
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{page.url} is {overflow}px wider than the window"


def log_in(context, base_url: str, username: str):
    page = watched_page(context)
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button.primary")
    page.wait_for_load_state()
    return page


@pytest.mark.parametrize("size", list(SIZES))
def test_each_roles_day_shows_what_it_must_and_fits_the_screen(live_server, day, size, chromium):
    browser = chromium
    width, height = SIZES[size]
    screens = Screens(size)
    base = live_server.url
    options = {"viewport": {"width": width, "height": height}, "locale": "zh-CN"}

    # The radiologist.
    reader = log_in(browser.new_context(**options), base, "dr_li")
    assert reader.url.endswith("/worklist/")
    worklist = reader.locator("#worklist").inner_text()
    assert "吴超" in worklist and "王芳" in worklist and "吴^超" not in worklist
    assert "0 分钟" not in worklist and "小时" in worklist
    fits(reader)
    screens.take(reader, "radiologist-1-worklist")

    reader.click("#claim-next button")
    reader.wait_for_selector("#report-form")
    assert f"/reading/{day['wang']}/" in reader.url  # the emergency first
    facts = reader.locator(".facts").first.inner_text()
    assert "王芳" in facts and "女" in facts and "胸部" in facts
    assert "签发并下一例" in reader.content()
    reader.fill("#findings", "右侧第 4、5 肋骨骨折，断端轻度错位；右侧少量气胸，肺组织压缩约 15%。")
    reader.fill("#impression", "右侧第 4、5 肋骨骨折；右侧少量气胸。")
    fits(reader)
    # The screen as the reader works on it: the viewer loaded, its toolbar fitted to the row.
    reader.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=60_000)
    screens.take(reader, "radiologist-2-reading")

    # The confirmation is reading.js's (deferred): a click before the page has loaded
    # would submit the form before the script has bound its handler.
    reader.wait_for_load_state("load")
    reader.click("button[value='sign_next']")
    reader.wait_for_selector("#sign-confirm[open]")
    assert "不能再修改" in reader.locator("#sign-confirm").inner_text()
    screens.take(reader, "radiologist-3-confirm")
    reader.click("#sign-confirm-ok")
    reader.wait_for_url(f"**/reading/{day['wu']}/")  # and on to the next
    reader.wait_for_selector("#report-form")
    assert "报告已签发。" in reader.content()
    assert "吴超" in reader.locator(".facts").first.inner_text()
    screens.take(reader, "radiologist-4-next-case")
    assert reader.errors == []

    # The township's technologist.
    tech = log_in(browser.new_context(**options), base, "tech_xuanwo")
    assert f"/facilities/{day['township']}/" in tech.url
    assert "右肺上叶占位" in tech.locator("#critical-alerts").inner_text()
    fits(tech)
    screens.take(tech, "technologist-1-home")

    tech.fill("#id_q", "wc")
    tech.click("#consult-search button")
    tech.wait_for_load_state()
    rows = tech.locator("#facility-consults tbody tr")
    assert rows.count() == 1 and "吴超" in rows.inner_text()
    fits(tech)
    screens.take(tech, "technologist-2-search")

    tech.goto(f"{base}/consults/{day['signed']}/")
    page = tech.content()
    assert "右肺上叶占位" in tech.locator("#critical-findings").inner_text()
    assert "签发医师" in tech.locator("#signers").inner_text() and "审核医师" not in page
    assert "张伟" in tech.locator("#patient-name").inner_text()
    assert tech.locator("#patient-sex").inner_text() == "男"
    assert tech.locator("#body-part").inner_text() == "胸部"
    assert tech.locator("#open-viewer").is_visible()
    assert tech.locator("#report-pdf").is_visible()
    fits(tech)
    screens.take(tech, "technologist-3-report")

    tech.click("#open-viewer")
    tech.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=60_000)
    overlay = tech.locator('[data-pane="0"] [data-overlay="tl"]').inner_text()
    assert "张伟" in overlay and "男" in overlay
    assert "序列：" in tech.locator('[data-pane="0"] [data-overlay="bl"]').inner_text()
    screens.take(tech, "technologist-4-viewer")

    tech.goto(f"{base}/consults/{day['wu']}/")
    assert tech.locator("#request-correction").count() == 0  # the reader has opened it
    tech.goto(f"{base}/studies/{day['signed_study']}/")
    assert tech.locator("#open-viewer").is_visible()
    fits(tech)
    assert tech.errors == []

    # Anyone holding the printed report, with no account.
    public = browser.new_context(**options).new_page()
    public.goto(f"{base}/verify/{day['token']}/")
    assert "报告真实" in public.locator("#verdict").inner_text()
    assert "磨玻璃" not in public.content() and "张伟" not in public.content()
    public.fill("#id_birth_date", "1955-02-20")
    public.click("#verify-form button")
    public.wait_for_selector("#verified-report")
    assert "周围型肺癌" in public.locator("#verified-report").inner_text()
    fits(public)
    screens.take(public, "public-1-verify")

    # The administrator.
    admin = log_in(browser.new_context(**options), base, "admin_zhao")
    admin.goto(f"{base}/audit/")
    table = admin.locator("#audit-events").inner_text()
    assert "签发报告" in table and "登录成功" in table and "修改医疗机构" in table
    assert "consults.report.signed" not in table and "facilities.user " not in table
    fits(admin)
    one_line = admin.evaluate(
        """() => [...document.querySelectorAll('#audit-events td.when time')].every(
            (time) => time.getClientRects().length === 1)"""
    )
    assert one_line, "a time in the audit trail wraps"
    screens.take(admin, "admin-1-audit")

    admin.goto(f"{base}/admin/billing/ledgerentry/")
    headers = admin.locator("#result_list thead").inner_text()
    assert "县医院价格" in headers and "EXAM DATE" not in headers.upper()
    assert admin.locator("link[rel='icon']").count() == 1
    screens.take(admin, "admin-2-ledger")
