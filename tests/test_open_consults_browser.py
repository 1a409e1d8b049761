"""The administrators' open consults in a real headless Chromium at 1366x768: a reader is
away, their consults are moved in bulk to the reader on duty, and each consult's history
shows it. With YUNYING_SCREENS set to a folder, each step is saved there as a PNG."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from consults.models import Consult
from facilities.models import AuditEvent, ExamKind, User
from tests.factories import make_consult, make_shift, make_user
from tests.test_daily_screens_browser import Screens, fits, log_in
from tests.test_open_consults import held

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture
def readers_away(transactional_db, county, township, other_township, administrator) -> dict[str, Any]:
    away = make_user(
        User.Role.RADIOLOGIST, county, username="dr_zhao", display_name="赵医生", reads_ct=True, reads_dr=True
    )
    stand_in = make_user(
        User.Role.RADIOLOGIST, county, username="dr_qian", display_name="钱医生", reads_ct=True, reads_dr=True
    )
    make_shift(stand_in, timezone.now() - timedelta(hours=2))
    consults = [
        held(township, away, minutes_ago=300, body_part_names="胸部"),
        held(township, away, kind=ExamKind.DR, minutes_ago=40, opened=True, body_part_names="胸部正位"),
        held(other_township, away, minutes_ago=20, body_part_names="头颅"),
    ]
    kept = held(other_township, stand_in, kind=ExamKind.DR, minutes_ago=5)
    make_consult(township, kind=ExamKind.DR, arrived_at=timezone.now() - timedelta(minutes=3))
    return {"away": away, "stand_in": stand_in, "moved": consults, "kept": kept}


def holder_row(page, username: str) -> dict[str, str]:
    row = page.locator(f"#holders tr[data-reader='{username}']")
    return {col: row.locator(f"td[data-col='{col}']").inner_text() for col in ("assigned", "opened", "overdue")}


def test_an_administrator_moves_an_absent_readers_consults_in_bulk(live_server, readers_away, chromium, monkeypatch):
    screens = Screens("1366x768")
    context = chromium.new_context(viewport=VIEWPORT, locale="zh-CN")
    page = log_in(context, live_server.url, "admin_wang")
    page.click("nav.main-nav a:has-text('待处理会诊')")
    page.wait_for_selector("#holders")
    assert holder_row(page, "dr_zhao") == {"assigned": "2", "opened": "1", "overdue": "1"}
    assert page.locator("#overdue-total").inner_text() == "1"
    first = page.locator("#open-consults tbody tr").first
    assert "已超时" in first.inner_text() and "胸部" in first.inner_text()
    fits(page)
    screens.take(page, "admin-3-open-consults")

    page.select_option("#id_radiologist", label="赵医生")
    page.click("#open-filters button[type='submit']")
    page.wait_for_selector("#open-consults")
    assert page.locator("#open-consults tbody tr").count() == 3
    page.check("#select-all")
    assert page.locator("#selected-count").inner_text() == "3"
    page.select_option("#reassign-to", index=1)
    page.fill("#reassign-note", "赵医生外出培训")
    page.click("#reassign-submit")
    page.wait_for_selector(".message.success")
    assert "已将 3 例会诊转给 钱医生。" in page.locator(".message.success").inner_text()
    assert holder_row(page, "dr_qian") == {"assigned": "4", "opened": "0", "overdue": "1"}
    assert holder_row(page, "dr_zhao") == {"assigned": "0", "opened": "0", "overdue": "0"}
    fits(page)
    screens.take(page, "admin-4-open-consults-moved")

    # The consult's history: its audit trail names the move, the reader and the note.
    page.goto(f"{live_server.url}/consults/open/")
    page.locator("#open-consults tbody tr").first.locator("a:has-text('历史')").click()
    page.wait_for_selector("#audit-events")
    history = page.locator("#audit-events").inner_text()
    assert "重新分配会诊" in history and "dr_qian" in history and "赵医生外出培训" in history
    assert not page.errors
    context.close()

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the browser's loop is done with
    for consult in readers_away["moved"]:
        consult.refresh_from_db()
        assert (consult.radiologist, consult.status) == (readers_away["stand_in"], Consult.Status.ASSIGNED)
    assert AuditEvent.objects.filter(action="consults.consult.reassigned").count() == 3
