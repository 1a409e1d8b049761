"""The monthly report in a real headless Chromium at 1366x768: an administrator makes it
from its page, downloads it as the browser downloads it, and its figures, read back from
the PDF, are the database's. With YUNYING_SCREENS set to a folder, the page is saved there."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from billing import formatting
from tests.test_daily_screens_browser import Screens, fits, log_in
from tests.test_monthly_report import cell, minutes, month_of_exams, pdf_text, raw, squeeze  # noqa: F401 -- a fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture
def september(transactional_db, month_of_exams, township, other_township, administrator) -> dict[str, Any]:  # noqa: F811
    """The month's figures from the raw rows, before the browser's loop forbids the ORM."""
    first, last = date(2025, 9, 1), date(2025, 9, 30)
    return {
        "month": raw(first, last),
        "townships": [(f.short_name, raw(first, last, f)) for f in (township, other_township)],
    }


def test_an_administrator_prints_the_monthly_report_and_its_figures_are_the_databases(
    live_server, september, chromium, tmp_path: Path
):
    screens = Screens("1366x768")
    context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN", accept_downloads=True)
    page = log_in(context, live_server.url, "admin_wang")
    page.click("#frame-monthly a")
    page.wait_for_selector("#monthly-form")
    page.select_option("#id_month", "2025-09")
    page.click("#monthly-form button[name='make']")
    page.wait_for_selector(".message.success")
    row = page.locator("#monthly-reports tr[data-month='2025-09']")
    month = september["month"]
    assert formatting.yuan(month["saving"]) in row.inner_text()
    fits(page)
    screens.take(page, "admin-5-monthly-report")

    with page.expect_download() as download:
        row.locator("a:has-text('下载 PDF')").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name == "yunying-monthly-2025-09.pdf"
    assert not page.errors
    context.close()

    text, pages = pdf_text(path.read_bytes())
    flat = squeeze(text)
    assert pages == 1
    assert f"检查量（人次） {month['exams']} CT {month['CT']} · DR {month['DR']}" in flat
    assert f"为群众节省（元） {formatting.yuan(month['saving'])}" in flat
    assert f"平均会诊时间（分钟） {minutes(month['mean'])}" in flat
    assert f"时限内完成率 {formatting.percent(month['share'])}" in flat
    for name, t in september["townships"]:
        row_text = (
            f"{name} {cell(t['CT'])} {cell(t['DR'])} {cell(t['exams'])} {formatting.yuan(t['saving'])} "
            f"{cell(t['signed'])} {minutes(t['mean'])} {formatting.percent(t['share'])}"
        )
        assert row_text in flat, row_text
    assert re.search(r"生成：王管理员", flat)
