"""The Content-Security-Policy (cloudpacs.middleware.ContentSecurityPolicyMiddleware): on
every HTML page, never on images, DICOM or exports; and in a real headless Chromium, the
viewer (a JPEG 2000 study too, whose decoder is WebAssembly), the dashboards' charts, the
admin and every other kind of page run under it without a single violation, while an
injected inline script is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from billing import rollup
from billing import services as billing_services
from consults import workflow
from consults.models import Consult
from facilities.models import User
from tests.dicomweb_support import build_archive
from tests.factories import PASSWORD, make_user

CSP = "Content-Security-Policy"


# --- The header ----------------------------------------------------------------------------------


def test_every_html_page_carries_the_policy(technologist_client):
    for response in (Client().get(reverse("login")), technologist_client.get(reverse("api_tokens"))):
        policy = response[CSP]
        assert "script-src 'self' 'wasm-unsafe-eval'" in policy
        assert "'unsafe-inline'" not in policy.split("style-src-attr")[0]  # never for scripts or <style>
        assert "object-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy


def test_error_pages_carry_it_too(technologist_client):
    response = technologist_client.get("/no-such-page/")
    assert response.status_code == 404
    assert CSP in response


def test_responses_that_are_not_pages_go_without_it(radiologist_client):
    schema = radiologist_client.get("/api/schema/")
    assert schema.status_code == 200 and CSP not in schema
    export = radiologist_client.get("/dashboards/turnaround/township.csv")
    assert export.status_code == 200 and CSP not in export


def test_report_only_sends_the_other_header(settings, db):
    settings.CSP_REPORT_ONLY = True
    response = Client().get(reverse("login"))
    assert CSP not in response
    assert "script-src 'self'" in response[f"{CSP}-Report-Only"]


def test_no_template_has_an_inline_script_or_handler():
    templates = Path(settings.BASE_DIR, "templates")
    for path in templates.rglob("*.html"):
        text = path.read_text()
        for index, part in enumerate(text.split("<script")[1:]):
            tag = part.split(">", 1)[0]
            # A JSON data block (json_script) is not run; anything else must come from a file.
            assert "src=" in tag or 'type="application/json"' in tag, f"{path.name}: inline <script> #{index + 1}"
        assert "<style" not in text, f"{path.name} has a <style> element"
        for handler in (" onclick=", " onload=", " onchange=", " onsubmit=", " onerror=", "javascript:"):
            assert handler not in text, f"{path.name} has {handler.strip()}"


# --- In the browser ------------------------------------------------------------------------------


# Every violation the document reports, and every one Chromium logs (workers included).
LISTEN = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}`);
});
"""


@pytest.fixture
def site(transactional_db, county, township, other_township, ct_modality, dr_modality, tmp_path) -> dict[str, Any]:
    # The data goes in before Playwright starts: its event loop makes Django refuse ORM calls.
    archive = build_archive(township, other_township, ct_modality, dr_modality, tmp_path / "in")
    technologist = make_user(User.Role.TECHNOLOGIST, township, username="tech_csp")
    radiologist = make_user(
        User.Role.RADIOLOGIST, county, username="dr_csp", reads_ct=True, reads_dr=True, is_senior=True
    )
    administrator = make_user(User.Role.ADMINISTRATOR, county, username="admin_csp", is_staff=True)
    ct_uid = archive.studies["zhang_ct"][0]
    j2k_uid = archive.studies["wang_j2k"][0]
    signed = Consult.objects.get(study__study_uid=ct_uid)
    workflow.claim_consult(signed, radiologist)
    workflow.sign_final(signed, radiologist, "双肺纹理清晰。", "胸部 CT 平扫未见异常。")
    # Something for the charts to draw: the saving and the dashboards' daily figures.
    billing_services.ensure_shaanxi_2021_schedule()
    billing_services.record_saving(Consult.objects.get(pk=signed.pk))
    rollup.rebuild()
    open_consult = Consult.objects.get(study__study_uid=j2k_uid)
    sessions = {}
    for user in (technologist, radiologist, administrator):
        client = Client()
        assert client.login(username=user.username, password=PASSWORD)
        sessions[user.role] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return {
        "sessions": sessions,
        "township": str(township.uuid),
        "ct": ct_uid,
        "j2k": j2k_uid,
        "signed": str(signed.uuid),
        "open": str(open_consult.uuid),
        "user_pk": radiologist.pk,
    }


class Visit:
    """One browser context signed in as one role, collecting every CSP report."""

    def __init__(self, browser: Any, base: str, session: str | None) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1200, "height": 800}, locale="zh-CN")
        if session:
            self.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": base}])
        self.context.add_init_script(LISTEN)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.policies: list[str] = []

    def open(self, path: str, ready: str | None = None) -> None:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        self.policies.append(response.headers.get("content-security-policy", ""))
        if ready is not None:
            self.page.wait_for_function(ready, timeout=90_000)
        # A moment for late loads (workers, fonts, chart redraws) to report.
        self.page.wait_for_timeout(300)
        self.check(path)

    def check(self, path: str) -> None:
        violations = self.page.evaluate("window.__violations")
        logged = [
            text for text in self.console if "Content Security Policy" in text or "Content-Security-Policy" in text
        ]
        assert violations == [] and logged == [], (path, violations, logged)
        assert self.errors == [], (path, self.errors)
        assert all("script-src 'self'" in policy for policy in self.policies), path


# Functions, not expressions: Playwright evaluates an expression with eval, which the policy
# refuses (as it should).
VIEWER_READY = "() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null"
CHARTS_DRAWN = "() => [...document.querySelectorAll('.chart')].every((chart) => chart.querySelector('canvas'))"


def show_the_tooltips(visit: Visit, path: str) -> None:
    """Show each chart's tooltip (HTML with style attributes), as a pointer over a bar
    would, through ECharts' own action: moving a pointer is at the mercy of timing."""
    shown = visit.page.evaluate(
        """() => [...document.querySelectorAll(".chart")].map((element) => {
            echarts.getInstanceByDom(element).dispatchAction({type: "showTip", seriesIndex: 0, dataIndex: 0});
            return element.querySelector("div:not(:has(canvas)):last-child")?.innerText.trim() || "";
        })"""
    )
    assert shown and all(shown), f"a chart of {path} showed no tooltip: {shown}"
    visit.page.wait_for_timeout(300)
    visit.check(f"{path} (tooltips)")


@pytest.mark.browser
@pytest.mark.slow
def test_the_viewer_and_every_kind_of_page_run_under_the_policy(live_server, site, chromium):
    base = live_server.url
    anonymous = Visit(chromium, base, None)
    anonymous.open("/accounts/login/")

    technologist = Visit(chromium, base, site["sessions"][User.Role.TECHNOLOGIST])
    technologist.open(f"/facilities/{site['township']}/")
    technologist.open(f"/studies/{site['ct']}/")
    technologist.open(f"/consults/{site['signed']}/")
    technologist.open("/accounts/password/")
    technologist.open("/accounts/tokens/")

    radiologist = Visit(chromium, base, site["sessions"][User.Role.RADIOLOGIST])
    radiologist.open("/worklist/")
    # The viewer on its own page and inside the reading page; the JPEG 2000 study is decoded
    # by WebAssembly in the viewer's worker.
    radiologist.open(f"/viewer/{site['ct']}/", VIEWER_READY)
    radiologist.open(f"/viewer/{site['j2k']}/", VIEWER_READY)
    loaded, failed = radiologist.page.evaluate(
        "(() => { const pane = window.yunyingViewer.viewers[0].panes[0]; return [pane.loaded, pane.failed]; })()"
    )
    assert loaded >= 1 and failed == 0
    radiologist.open(f"/reading/{site['open']}/", VIEWER_READY)
    radiologist.open(f"/reading/{site['signed']}/")
    # The server-rendered stand-in image and the worklist's refresh are scripts from files.
    radiologist.open("/dashboards/volume/")
    radiologist.open("/dashboards/exams/")
    radiologist.open("/dashboards/turnaround/", CHARTS_DRAWN)
    show_the_tooltips(radiologist, "/dashboards/turnaround/")

    administrator = Visit(chromium, base, site["sessions"][User.Role.ADMINISTRATOR])
    administrator.open("/dashboard/")
    administrator.open("/dashboards/savings/", CHARTS_DRAWN)
    show_the_tooltips(administrator, "/dashboards/savings/")
    administrator.open("/audit/")
    administrator.open("/admin/")
    administrator.open(f"/admin/facilities/user/{site['user_pk']}/change/")
    administrator.open("/admin/facilities/rostershift/add/")

    # Exports are files, not pages: they still download, with no policy of their own.
    report = radiologist.page.request.get(f"{base}/reading/{site['signed']}/report.pdf")
    assert report.status == 200 and report.headers["content-type"] == "application/pdf"
    export = administrator.page.request.get(f"{base}/dashboards/savings/township.xlsx")
    assert export.status == 200
    assert "content-security-policy" not in export.headers


@pytest.mark.browser
@pytest.mark.slow
def test_an_injected_inline_script_is_refused_and_reported(live_server, site, chromium):
    visit = Visit(chromium, live_server.url, site["sessions"][User.Role.TECHNOLOGIST])
    visit.open("/accounts/tokens/")
    visit.page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.__ran = true;";
            document.body.append(script);
            const handler = '<img src="/static/img/favicon.svg" onload="window.__ran = true">';
            document.body.insertAdjacentHTML("beforeend", handler);
        }"""
    )
    visit.page.wait_for_timeout(500)
    assert visit.page.evaluate("window.__ran") is None
    violations = visit.page.evaluate("window.__violations")
    assert len(violations) == 2
    assert all(violation.startswith("script-src") for violation in violations)
