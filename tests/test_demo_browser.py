"""The seeded Hanyin demo (`seed_hanyin --with-images`) in a real headless Chromium: the
administrator's day on the dashboards, down to the exams behind a number, and the
radiologist's, from the recent studies on the worklist (read with their images and
signed) to a historical consult behind a dashboard figure, with its patient and report.

The demo is the session's (conftest's `hanyin`, never committed), with the recent studies
sent in on top of it, and the browser's server answers with this test's own connection
(conftest's `live_server_on_held_data`), so the 62,305 exams are not loaded a second time.
With YUNYING_SCREENS set to a folder, each step is saved there as a PNG."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from consults.models import Consult
from facilities.demo import demo_password
from facilities.models import User
from tests.browser import BUILT_VIEWER, launch
from tests.test_daily_screens_browser import Screens, fits

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def demo(hanyin, db, django_capture_on_commit_callbacks) -> dict[str, str]:
    out = StringIO()
    # The recent studies with their images, as `seed_hanyin --with-images` sends them; the
    # roster gives them to readers once committed, which here is the end of this block.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_hanyin", "--no-history", "--with-images", stdout=out)
    recent = Consult.objects.filter(study__number_of_instances__gt=0).select_related("radiologist")
    reader = recent.exclude(radiologist__isnull=True).values_list("radiologist__username", flat=True).first()
    assert recent.count() == 6 and reader is not None
    pages = {page: reverse(f"billing:dashboards:{page}") for page in ("savings", "volume", "turnaround")}
    return {"reader": reader, "output": out.getvalue()} | pages


def log_in(browser, options: dict, base: str, username: str, password: str):
    page = browser.new_context(**options).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button.primary")
    page.wait_for_load_state()
    return page


def test_the_administrators_and_the_radiologists_day_on_the_seeded_demo(demo, live_server_on_held_data):
    from playwright.sync_api import sync_playwright

    assert BUILT_VIEWER.exists(), "the viewer is not built: run scripts/build-viewer.sh"
    screens = Screens("1366x768")
    base = live_server_on_held_data
    options = {"viewport": {"width": 1366, "height": 768}, "locale": "zh-CN"}
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            # The administrator: the savings headline, the volume tables, the turnaround.
            admin = log_in(browser, options, base, "admin", demo_password(User.Role.ADMINISTRATOR))
            admin.goto(base + demo["savings"])
            assert "831" in admin.locator("#total-yuan").inner_text()
            screens.take(admin, "demo-admin-1-savings")
            admin.goto(base + demo["volume"])
            volume = admin.content()
            assert "5473" in volume.replace(",", "") and "1590" in volume.replace(",", "")
            fits(admin)
            screens.take(admin, "demo-admin-2-volume")
            admin.goto(base + demo["turnaround"])
            assert "龙垭" in admin.content()
            screens.take(admin, "demo-admin-3-turnaround")
            admin.locator("table a[href*='/exams/']").first.click()
            admin.wait_for_load_state()
            assert admin.locator("#exams tbody tr").count() > 10
            screens.take(admin, "demo-admin-4-exams")
            assert admin.errors == []

            # The radiologist on duty: the recent studies wait on the worklist.
            reader = log_in(browser, options, base, demo["reader"], demo_password(User.Role.RADIOLOGIST))
            assert reader.url.endswith("/worklist/")
            worklist = reader.locator("#worklist").inner_text()
            assert "头颅" in worklist and "膝关节" in worklist
            fits(reader)
            screens.take(reader, "demo-radiologist-1-worklist")
            reader.locator("#worklist a[href*='/reading/']").first.click()
            reader.wait_for_load_state()
            first = reader.url
            reader.click("button[name='open']")  # given by the roster: the reader opens it
            reader.wait_for_selector("#report-form")
            reader.wait_for_load_state("load")
            reader.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=90_000)
            facts = reader.locator(".facts").first.inner_text()
            assert "头颅" in facts  # the emergency first
            screens.take(reader, "demo-radiologist-2-reading")
            reader.fill("#findings", "右侧基底节区见团块状高密度影，周围见低密度水肿带，中线结构居中。")
            reader.fill("#impression", "右侧基底节区脑出血。")
            reader.click("button[value='sign_next']")
            reader.wait_for_selector("#sign-confirm[open]")
            reader.click("#sign-confirm-ok")
            reader.wait_for_url(lambda url: url != first)
            reader.wait_for_load_state()
            assert "报告已签发。" in reader.content()
            screens.take(reader, "demo-radiologist-3-next")

            # ... and behind a dashboard figure, a historical consult with its patient and report.
            reader.goto(base + demo["volume"])
            reader.locator("table a[href*='/exams/']").first.click()
            reader.wait_for_load_state()
            reader.locator("#exams a[href*='/consults/']").first.click()
            reader.wait_for_load_state()
            assert reader.locator("#patient-name").inner_text().strip()
            assert reader.locator("#report-impression").inner_text().strip() not in ("", "—")
            assert reader.locator("#open-viewer").count() == 0  # no images behind the history
            fits(reader)
            screens.take(reader, "demo-radiologist-4-history")

            assert reader.errors == []
        finally:
            browser.close()
