"""In a real browser: a radiologist claims a consult, starts from a template, writes the
impression and signs; the township's technologist then sees the signed report, and sees
and acknowledges a critical finding."""

from __future__ import annotations

import pytest

from consults.models import Consult, CriticalFinding
from facilities.models import ExamKind, User
from tests.browser import launch
from tests.factories import PASSWORD, make_consult, make_facility, make_modality, make_study, make_user


def log_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button.primary")
    page.wait_for_load_state()


@pytest.mark.browser
def test_a_radiologist_claims_writes_and_signs_and_the_township_sees_the_report(live_server, transactional_db):
    from playwright.sync_api import sync_playwright

    # The data goes in before Playwright starts: its event loop makes Django refuse ORM calls.
    make_facility("COUNTY", township=False, name="汉阴县人民医院", short_name="县医院", pinyin="Hanyin")
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo")
    modality = make_modality(township, ExamKind.CT, "XUANWO_CT")
    consult = make_consult(
        township, make_study(township, modality), body_part_names="胸部", clinical_history="咳嗽两周"
    )
    make_user(User.Role.RADIOLOGIST, None, username="dr_li", display_name="李医生", is_senior=True)
    make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo", display_name="漩涡技师")
    reading = f"{live_server.url}/reading/{consult.uuid}/"

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            radiologist = browser.new_context(locale="zh-CN").new_page()
            log_in(radiologist, live_server.url, "dr_li")
            radiologist.goto(reading)
            assert "咳嗽两周" in radiologist.content()

            radiologist.click("button[name='claim']")
            radiologist.wait_for_selector("#report-form")
            assert "阅片中" in radiologist.locator("#consult-status").inner_text()

            radiologist.select_option("#template-select", label="胸部 · 胸部 CT 平扫（正常）")
            assert "双肺纹理清晰" in radiologist.input_value("#findings")
            radiologist.fill("#impression", "胸部 CT 平扫未见明显异常，建议随访。")
            # Signing is final: the page asks first. Cancelled, nothing is signed.
            radiologist.click("button[value='sign']")
            assert radiologist.locator("#sign-confirm").is_visible()
            assert "建议随访" in radiologist.locator("#sign-confirm [data-confirm-impression]").inner_text()
            radiologist.click("#sign-confirm-cancel")
            assert not radiologist.locator("#sign-confirm").is_visible()
            assert "阅片中" in radiologist.locator("#consult-status").inner_text()
            # Ctrl+Enter asks the same question; confirmed, the report is signed.
            radiologist.locator("#impression").press("Control+Enter")
            radiologist.wait_for_selector("#sign-confirm[open]")
            radiologist.click("#sign-confirm-ok")
            radiologist.wait_for_selector("#report-impression")
            assert "已签发" in radiologist.locator("#consult-status").inner_text()
            assert "建议随访" in radiologist.locator("#report-impression").inner_text()

            radiologist.click("details summary:has-text('报告危急值')")
            radiologist.fill("#critical-description", "偶见右肺门占位，请尽快进一步检查。")
            radiologist.click("button[name='critical']")
            radiologist.wait_for_selector("#critical-findings")

            township_page = browser.new_context(locale="zh-CN").new_page()
            log_in(township_page, live_server.url, "tech_xuanwo")
            township_page.goto(reading)
            assert "胸部 CT 平扫未见明显异常，建议随访。" in township_page.locator("#report-impression").inner_text()
            assert "双肺纹理清晰" in township_page.locator("#report-findings").inner_text()
            assert "右肺门占位" in township_page.locator("#critical-findings").inner_text()

            township_page.click("button[name='acknowledge']")
            township_page.wait_for_selector("#critical-findings li.acknowledged")
            assert "漩涡技师" in township_page.locator("#critical-findings").inner_text()

            pdf = township_page.request.get(f"{reading}report.pdf")
            assert pdf.status == 200
            assert pdf.headers["content-type"] == "application/pdf"
            # Looking at it is not receiving it: the township says so with its button.
            assert "已签发" in township_page.locator("#consult-status").inner_text()
            township_page.click("button[name='receive']")
            township_page.wait_for_selector("#receipt .muted")
            assert "送达" in township_page.locator("#receipt").inner_text()
        finally:
            browser.close()

    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
    assert consult.report.signed_by.username == "dr_li"
    assert CriticalFinding.objects.get(consult=consult).acknowledged_by.username == "tech_xuanwo"
