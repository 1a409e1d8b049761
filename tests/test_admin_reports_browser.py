"""The administrators' reports in Chromium at 1366x768, as an administrator opens them from
the dashboards' navigation: the figures, the charts drawn, nothing off the side of the
window, no script error. With YUNYING_SCREENS=<folder> each page is saved there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from billing import hanyin
from facilities.models import ExamKind, User
from tests.browser import watched_page
from tests.factories import PASSWORD, make_facility, make_modality, make_user
from tests.test_admin_reports import build_history

WIDTH, HEIGHT = 1366, 768


@pytest.fixture(scope="module")
def reports(module_transaction) -> dict[str, Any]:
    """The history, built once for the module's four pages and held in a transaction
    (conftest's `module_transaction`), not committed again for each test. The browser's
    server answers with the test's own connection (`live_server_on_held_data`); what a test
    writes (its session) is undone after it. Built before Playwright starts: its event
    loop makes Django refuse ORM calls."""
    with module_transaction.building():
        return build_reports()


def build_reports() -> dict[str, Any]:
    make_facility("COUNTY", township=False, name="汉阴县人民医院", short_name="县医院", pinyin="Hanyin")
    xuanwo = make_facility(
        "XUANWO", name="漩涡镇中心卫生院", short_name="漩涡", pinyin="Xuanwo", **hanyin.travel_defaults("XUANWO")
    )
    pingliang = make_facility(
        "PINGLIANG", name="平梁镇卫生院", short_name="平梁", pinyin="Pingliang", **hanyin.travel_defaults("PINGLIANG")
    )
    make_modality(xuanwo, ExamKind.CT, "XUANWO_CT")
    make_modality(xuanwo, ExamKind.DR, "XUANWO_DR")
    reader = make_user(User.Role.RADIOLOGIST, None, username="dr_li", display_name="李医生", is_senior=True)
    admin = make_user(User.Role.ADMINISTRATOR, None, username="admin_zhao", display_name="赵管理员", is_staff=True)
    return build_history(xuanwo, pingliang, reader, admin)


def fits(page: Any) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{page.url} is {overflow}px wider than the window"


def save(page: Any, name: str) -> None:
    folder = os.environ.get("YUNYING_SCREENS", "")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"administrator-{name}-1366x768.png"), full_page=True)


def charts_drawn(page: Any, *ids: str) -> None:
    for chart in ids:
        page.wait_for_selector(f"#{chart} canvas")


@pytest.fixture
def admin_page(reports, db, live_server_on_held_data, chromium) -> Any:
    base = live_server_on_held_data
    context = chromium.new_context(viewport={"width": WIDTH, "height": HEIGHT}, locale="zh-CN")
    page = watched_page(context)
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", "admin_zhao")
    page.fill("#id_password", PASSWORD)
    page.click("button.primary")
    page.wait_for_load_state()
    page.goto(f"{base}/dashboards/savings/")
    return page


def test_the_growth_page_from_the_navigation(admin_page) -> None:
    page = admin_page
    page.click("nav.dash-nav >> text=同比环比")
    page.wait_for_selector("#growth-exams-month")
    assert page.locator("h1").inner_text() == "同比环比"
    charts_drawn(page, "exams-chart", "savings-chart")
    header = page.locator("#growth-exams-month thead").inner_text()
    assert "同比增长" in header and "环比增长" in header
    # 2024-09 comes after a month with no exam: its month-over-month cell is blank.
    september = page.locator("#growth-exams-month tr", has_text="2024-09").locator("td").nth(4)
    assert september.inner_text().strip() == ""
    fits(page)
    save(page, "growth")
    assert page.errors == []


def test_the_workload_page_from_the_navigation(admin_page) -> None:
    page = admin_page
    page.click("nav.dash-nav >> text=医师工作量")
    page.wait_for_selector("#workload-radiologists")
    assert "18:00–08:00" in page.locator(".lead").inner_text()
    charts_drawn(page, "workload-chart")
    names = page.locator("#workload-radiologists tbody th").all_inner_texts()
    assert names == ["李医生", "王医生"]
    assert page.locator("#workload-months tbody tr").count() >= 15
    fits(page)
    save(page, "workload")
    assert page.errors == []


def test_the_timeliness_page_from_the_navigation(admin_page) -> None:
    page = admin_page
    page.click("nav.dash-nav >> text=时限达标")
    page.wait_for_selector("#timeliness-table")
    charts_drawn(page, "timeliness-chart")
    first = page.locator("#timeliness-table tbody tr").first.inner_text()
    assert "急诊" in first and "CT" in first
    assert page.locator("#total-overdue").inner_text() == "1"
    fits(page)
    save(page, "timeliness")
    assert page.errors == []


def test_the_travel_beside_the_price_difference(admin_page) -> None:
    page = admin_page
    page.click("nav.dash-nav >> text=患者节省")
    page.wait_for_selector("#travel-table")
    row = page.locator("#travel-table tbody tr", has_text="漩涡").inner_text()
    assert "51.0" in row
    page.click("#travel-sources summary")
    assert "sanqinyou.com" in page.locator("#travel-sources").inner_text()
    assert "估算" in page.locator("#travel-sources").inner_text()
    fits(page)
    save(page, "travel")
    assert page.errors == []
