"""What a walk through each role's day on the demo, looking at the screens in both
languages, found wrong, held in a real headless Chromium: each test is one thing a user
saw (docs/screens)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import watched_page
from tests.factories import PASSWORD
from tests.test_daily_screens_browser import day  # noqa: F401 -- a fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1366, "height": 768}
# What the calendar's row of weekdays starts with in each language (flatpickr's zh and
# default locales).
WEEKDAYS = {"zh-hans": "周日", "en": "Sun"}


def signed_in(browser: Any, base_url: str, username: str | None, language: str) -> Any:
    """A page at 1366x768 in `language` (the header's switch, as a cookie), signed in as
    `username` through the login page, or nobody's."""
    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    context.add_cookies([{"name": "django_language", "value": language, "url": base_url}])
    page = watched_page(context)
    if username is not None:
        page.goto(f"{base_url}/accounts/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("button.primary")
        page.wait_for_load_state()
    return page


def calendar_of(page: Any, selector: str) -> str:
    """Open the date field's calendar and return its text (weekdays, month, time)."""
    field = page.locator(selector)
    assert field.get_attribute("type") in (None, "text"), f"{selector} is the browser's own date input"
    field.click()
    calendar = page.locator(".flatpickr-calendar.open")
    calendar.wait_for()
    text = calendar.inner_text()
    page.keyboard.press("Escape")
    page.locator("h1").first.click()  # closes it
    return text


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_every_date_field_opens_a_calendar_in_the_pages_language(live_server, day, language, chromium):  # noqa: F811
    """The browser's own date fields wrote mm/dd/yyyy on the Chinese pages and the monthly
    report's month as "November 2026": every date is now a calendar in the page's language,
    typed as YYYY-MM-DD."""
    base = live_server.url
    weekday = WEEKDAYS[language]
    other = WEEKDAYS["en" if language == "zh-hans" else "zh-hans"]

    tech = signed_in(chromium, base, "tech_xuanwo", language)
    tech.goto(f"{base}/facilities/{day['township']}/")
    for field in ("#id_since", "#id_until"):
        text = calendar_of(tech, field)
        assert weekday in text and other not in text
    tech.goto(f"{base}/orders/")
    assert weekday in calendar_of(tech, "#id_patient_birth_date")
    scheduled = calendar_of(tech, "#id_scheduled_at")
    assert weekday in scheduled and other not in scheduled
    assert tech.locator(".flatpickr-calendar .flatpickr-time").count() == 1  # with the time of day
    assert tech.locator("input[type=date], input[type=month], input[type=datetime-local]").count() == 0

    admin = signed_in(chromium, base, "admin_zhao", language)
    admin.goto(f"{base}/audit/")
    assert weekday in calendar_of(admin, "#id_since")
    admin.goto(f"{base}/dashboards/exams/")
    assert weekday in calendar_of(admin, "#id_date_from")
    admin.goto(f"{base}/dashboards/monthly/")
    months = admin.locator("#id_month option").all_inner_texts()
    assert months and all(len(m) == 7 and m[4] == "-" for m in months), months  # YYYY-MM in either language
    assert months == sorted(months, reverse=True)
    assert admin.locator("input[type=month]").count() == 0

    public = signed_in(chromium, base, None, language)
    public.goto(f"{base}/verify/{day['token']}/")
    assert weekday in calendar_of(public, "#id_birth_date")
    for page in (tech, admin, public):
        assert page.errors == []


def test_a_date_typed_into_the_order_form_is_the_date_registered(live_server, day, chromium):  # noqa: F811
    """The calendar takes a date typed by hand, as the form reads it."""
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", "zh-hans")
    tech.goto(f"{base}/orders/")
    tech.fill("#id_patient_name", "赵建国")
    tech.fill("#id_patient_id", "XW9001")
    tech.fill("#id_patient_birth_date", "1962-05-17")
    tech.fill("#id_scheduled_at", "2026-12-06 09:30")
    tech.locator("#id_body_parts input[type=checkbox]").first.check()
    tech.locator("h1").first.click()
    tech.click("#order-form button.primary")
    tech.wait_for_load_state()
    row = tech.locator("#orders-waiting tbody tr", has_text="XW9001")
    assert row.count() == 1
    assert "2026-12-06 09:30" in row.inner_text()
    assert tech.errors == []


@pytest.mark.parametrize(("language", "age"), [("zh-hans", "70岁"), ("en", "70Y")])
def test_the_viewer_writes_the_patients_age_as_the_page_speaks(live_server, day, language, age, chromium):  # noqa: F811
    """The overlay wrote 70Y on the Chinese page, as DICOM writes an age."""
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", language)
    tech.goto(f"{base}/viewer/{day['signed_study']}/")
    tech.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=60_000)
    overlay = tech.locator('[data-pane="0"] [data-overlay="tl"]').inner_text()
    assert age in overlay  # born 1955-02-20, examined 2025-09-01
    if language == "zh-hans":
        assert "70Y" not in overlay
    assert tech.errors == []
