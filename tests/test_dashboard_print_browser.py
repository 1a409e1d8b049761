"""The turnaround page printed in a real headless Chromium: the stage tables, closed on
screen (details on demand), are printed."""

from __future__ import annotations

from datetime import date

import pytest
from django.conf import settings
from django.test import Client

from billing import rollup
from facilities.models import ExamKind
from tests.browser import session_context, watched_page
from tests.test_dashboards import make_exam

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def signed(township, other_township, ct_modality, dr_modality, radiologist, administrator) -> str:
    make_exam(township, ExamKind.CT, date(2025, 3, 3), 42, radiologist)
    make_exam(other_township, ExamKind.DR, date(2025, 3, 4), 18, radiologist)
    rollup.rebuild()
    client = Client()
    client.force_login(administrator)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_the_closed_stage_tables_of_the_turnaround_page_are_printed(live_server, signed, chromium) -> None:
    page = watched_page(session_context(chromium, live_server.url, signed))
    page.goto(f"{live_server.url}/dashboards/turnaround/")
    page.wait_for_load_state("load")
    stages = page.locator("#turnaround-township-stages")
    assert stages.count() == 1
    assert not stages.is_visible()  # on screen, on demand
    assert page.locator("details.stages[open]").count() == 0

    page.emulate_media(media="print")
    assert stages.is_visible()
    assert "漩涡" in stages.inner_text() and "平梁" in stages.inner_text()
    assert page.locator("details.stages summary").first.is_visible()  # its heading
    page.emulate_media(media="screen")
    assert not stages.is_visible()

    # Where a browser cannot style a closed <details>, the script opens them for the
    # printout and closes them after it.
    closed = page.locator("details.stages").count()
    page.evaluate("window.dispatchEvent(new Event('beforeprint'))")
    assert page.locator("details.stages[open]").count() == closed
    page.evaluate("window.dispatchEvent(new Event('afterprint'))")
    assert page.locator("details.stages[open]").count() == 0
    assert page.pdf(format="A4")[:4] == b"%PDF"
    assert page.errors == []
