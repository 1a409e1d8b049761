"""A technologist logs in with a real browser, sees their facility page in Chinese, and
switches it to English with the header's language switch."""

from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from consults.models import Consult
from facilities.models import ExamKind, User
from tests.browser import launch
from tests.factories import PASSWORD, make_facility, make_user


@pytest.mark.browser
def test_a_technologist_logs_in_sees_chinese_and_switches_to_english(live_server, transactional_db):
    from playwright.sync_api import sync_playwright

    # The data goes in before Playwright starts: its event loop makes Django refuse ORM calls.
    township = make_facility("XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo")
    make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo", display_name="漩涡技师")
    Consult.objects.create(facility=township, kind=ExamKind.DR, exam_date=date(2025, 9, 1), arrived_at=timezone.now())

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            # A Chinese browser, as at a township health centre.
            page = browser.new_page(locale="zh-CN")
            page.goto(f"{live_server.url}/")
            assert "/accounts/login/" in page.url
            assert page.locator("h1").inner_text() == "登录"

            page.fill("#id_username", "tech_xuanwo")
            page.fill("#id_password", PASSWORD)
            page.click("button.primary")

            page.wait_for_url(f"{live_server.url}/facilities/{township.uuid}/")
            assert page.locator("h1").inner_text() == "漩涡镇中心卫生院"
            assert page.locator("html").get_attribute("lang") == "zh-hans"
            assert "本院检查" in page.locator(".main-nav").inner_text()
            assert "待分配" in page.locator("#facility-consults").inner_text()
            assert "漩涡技师" in page.locator(".who").inner_text()

            page.click(".language-switch button[value='en']")

            page.wait_for_function("() => document.documentElement.lang === 'en'")
            assert page.url == f"{live_server.url}/facilities/{township.uuid}/"
            assert "Our studies" in page.locator(".main-nav").inner_text()
            assert "Waiting" in page.locator("#facility-consults").inner_text()
            page.click(".account-menu summary")  # the logout is in the account menu
            assert page.locator(".logout button").inner_text() == "Log out"
        finally:
            browser.close()
