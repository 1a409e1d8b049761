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


def typed_only(page: Any, selector: str) -> None:
    """A birth date: typed as YYYY-MM-DD, no calendar of decades to page through, and no
    browser date input either."""
    field = page.locator(selector)
    assert field.get_attribute("type") in (None, "text")
    assert field.get_attribute("placeholder") == "YYYY-MM-DD"
    field.click()
    assert page.locator(".flatpickr-calendar.open").count() == 0


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_every_date_field_opens_a_calendar_in_the_pages_language(live_server, day, language, chromium):  # noqa: F811
    """The browser's own date fields wrote mm/dd/yyyy on the Chinese pages and the monthly
    report's month as "November 2026": every date is now a calendar in the page's language,
    typed as YYYY-MM-DD (a birth date only typed)."""
    base = live_server.url
    weekday = WEEKDAYS[language]
    other = WEEKDAYS["en" if language == "zh-hans" else "zh-hans"]

    tech = signed_in(chromium, base, "tech_xuanwo", language)
    tech.goto(f"{base}/facilities/{day['township']}/")
    for field in ("#id_since", "#id_until"):
        text = calendar_of(tech, field)
        assert weekday in text and other not in text
    tech.goto(f"{base}/orders/")
    typed_only(tech, "#id_patient_birth_date")
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
    typed_only(public, "#id_birth_date")
    for page in (tech, admin, public):
        assert page.errors == []


def test_a_date_typed_into_the_order_form_is_the_date_registered(live_server, day, chromium):  # noqa: F811
    """The calendar takes a date typed by hand, as the form reads it, and closes so that the
    button below it can be clicked."""
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", "zh-hans")
    tech.goto(f"{base}/orders/")
    tech.fill("#id_patient_name", "赵建国")
    tech.fill("#id_patient_id", "XW9001")
    tech.fill("#id_patient_birth_date", "1962-05-17")
    tech.fill("#id_scheduled_at", "2026-12-06 09:30")
    tech.locator("#id_body_parts input[type=checkbox]").first.check()
    tech.fill("#id_scheduled_at", "2026-12-06 09:30")  # the last field typed: its calendar closes
    assert tech.locator(".flatpickr-calendar.open").count() == 0
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


@pytest.fixture
def parts_as_written(day):  # noqa: F811
    """吴超's request names its parts as an order writes them, in Chinese."""
    from consults.models import Consult

    Consult.objects.filter(uuid=day["wu"]).update(body_part_names="胸部、腹部", body_parts=2)
    return day


def test_body_parts_are_named_in_english_on_the_english_pages(live_server, parts_as_written, chromium):
    """The English township page, worklist and consult wrote every exam as "CT · 胸部",
    and the order form's parts in Chinese."""
    ids = parts_as_written
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", "en")
    tech.goto(f"{base}/facilities/{ids['township']}/")
    row = tech.locator("#facility-consults tbody tr", has_text="Wu Chao").inner_text()
    assert "Chest, Abdomen" in row and "胸部" not in row
    tech.goto(f"{base}/consults/{ids['wu']}/")
    assert tech.locator("#body-part").inner_text() == "Chest, Abdomen"
    tech.goto(f"{base}/orders/")
    parts = tech.locator("#id_body_parts").inner_text()
    assert "Chest (CT/DR)" in parts and "胸部" not in parts

    reader = signed_in(chromium, base, "dr_li", "en")
    reader.goto(f"{base}/worklist/")
    assert "CT · Chest, Abdomen" in reader.locator("#worklist").inner_text()
    # In Chinese they stay as written.
    chinese = signed_in(chromium, base, "dr_li", "zh-hans")
    chinese.goto(f"{base}/worklist/")
    assert "CT · 胸部、腹部" in chinese.locator("#worklist").inner_text()
    for page in (tech, reader, chinese):
        assert page.errors == []


@pytest.fixture
def rolled_up(day):  # noqa: F811
    """The day's consults in the dashboards' rollup, as the periodic task puts them."""
    from billing import rollup

    rollup.follow_consult_changes()
    return day


def test_the_timeliness_chart_prints_a_share_as_its_table_does(live_server, rolled_up, chromium):
    """Its bars read 98.60 and 100 beside the table's 98.6 % and 100.0 %."""
    base = live_server.url
    admin = signed_in(chromium, base, "admin_zhao", "zh-hans")
    admin.goto(f"{base}/dashboards/timeliness/")
    admin.wait_for_function("() => window.echarts && echarts.getInstanceByDom(document.querySelector('.chart'))")
    labels = admin.evaluate(
        """() => {
          const label = echarts.getInstanceByDom(document.querySelector('.chart')).getOption().series[0].label;
          return [98.6, 100, 81.25].map((value) => label.formatter({ value }));
        }"""
    )
    assert labels == ["98.6", "100.0", "81.3"]
    assert admin.errors == []


def test_a_charts_axis_prints_its_ticks_as_the_tables_print_figures(live_server, rolled_up, chromium):
    """The value axis read 0, 3,000.0, 6,000.00, 9,000.000 ...: ECharts hands its label
    formatter the tick's index, which was taken for the number of decimals."""
    base = live_server.url
    admin = signed_in(chromium, base, "admin_zhao", "zh-hans")
    admin.goto(f"{base}/dashboards/turnaround/")
    admin.wait_for_function("() => window.echarts && echarts.getInstanceByDom(document.querySelector('.chart'))")
    ticks = admin.evaluate(
        """() => {
          const axis = echarts.getInstanceByDom(document.querySelector('.chart')).getOption().yAxis[0];
          return [0, 3000, 6000, 9000, 12000, 2.5].map((value, index) => axis.axisLabel.formatter(value, index));
        }"""
    )
    assert ticks == ["0", "3,000", "6,000", "9,000", "12,000", "2.50"]
    assert admin.errors == []


def test_the_report_templates_label_stays_on_one_line_beside_its_list(live_server, day, chromium):  # noqa: F811
    """At 1366x768 the reading panel broke 报告模板 into 报告模 / 板."""
    base = live_server.url
    reader = signed_in(chromium, base, "dr_li", "zh-hans")
    reader.goto(f"{base}/reading/{day['wang']}/")
    reader.locator("#actions button[name=open], #actions button[name=claim]").first.click()
    reader.wait_for_selector("#template-select")
    lines = reader.evaluate(
        """() => {
          const label = document.querySelector('.template-pick');
          const range = document.createRange();
          range.selectNodeContents(label.firstChild);
          return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
        }"""
    )
    assert lines == 1
    assert reader.errors == []


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_the_order_form_puts_each_label_above_its_field_in_the_pages_font(live_server, day, language, chromium):  # noqa: F811
    """Each label sat on its field's line, text areas wrote in the browser's monospace and
    the 27 body parts made one long column."""
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", language)
    tech.goto(f"{base}/orders/")
    misplaced = tech.evaluate(
        """() => [...document.querySelectorAll('#order-form form > label[for]')].filter((label) => {
             const field = document.getElementById(label.htmlFor);
             return field && label.getBoundingClientRect().bottom > field.getBoundingClientRect().top + 1;
           }).map((label) => label.textContent)"""
    )
    assert misplaced == []
    fonts = tech.evaluate(
        """() => [document.body, ...document.querySelectorAll('#order-form textarea')].map(
             (element) => getComputedStyle(element).fontFamily)"""
    )
    assert len(fonts) == 3 and len(set(fonts)) == 1, fonts
    columns = tech.evaluate(
        """() => new Set([...document.querySelectorAll('#id_body_parts input')].map(
             (box) => Math.round(box.getBoundingClientRect().left))).size"""
    )
    assert columns > 1
    assert tech.errors == []


@pytest.mark.parametrize(
    ("language", "township", "county", "short"),
    [
        ("zh-hans", "漩涡镇中心卫生院", "汉阴县人民医院", "漩涡"),
        ("en", "Xuanwo Central Township Health Centre", "Hanyin County People's Hospital", "Xuanwo"),
    ],
)
def test_facilities_are_named_in_the_pages_language(live_server, day, language, township, county, short, chromium):  # noqa: F811
    """The English pages wrote every facility's name in Chinese (漩涡镇中心卫生院 as the
    township page's heading, 汉阴县人民医院 on the verification page)."""
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", language)
    tech.goto(f"{base}/facilities/{day['township']}/")
    assert tech.locator("h1").inner_text() == township
    tech.click(".account-menu summary")  # the role and facility are in the account menu
    assert tech.locator(".who-facility").inner_text() == short
    tech.goto(f"{base}/consults/{day['wu']}/")
    assert township in tech.locator("p.lead").inner_text()
    public = signed_in(chromium, base, None, language)
    public.goto(f"{base}/verify/{day['token']}/")
    assert public.locator("#verify-county").inner_text() == county
    assert public.locator("#verify-facility").inner_text() == township
    for page in (tech, public):
        assert page.errors == []


@pytest.mark.parametrize(
    ("language", "too_few", "required"),
    [
        ("zh-hans", "部位数至少为 1。", "该字段是必填项。"),
        ("en", "There must be at least one body part.", "This field is required."),
    ],
)
def test_a_refused_field_is_told_in_the_pages_language(live_server, day, language, too_few, required, chromium):  # noqa: F811
    """The browser's own message for min=1 ("Value must be greater than or equal to 1.") was in
    the browser's language on a Chinese page, and not the form's words."""
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", language)
    tech.goto(f"{base}/consults/{day['wu']}/")
    tech.locator("#request-correction summary").click()
    tech.fill("#request-part-count", "0")
    tech.click("#request-correction button[name=correct]")
    assert tech.url.endswith(f"/consults/{day['wu']}/")  # not posted
    message = tech.evaluate("() => document.querySelector('#request-part-count').validationMessage")
    assert message == too_few
    tech.fill("#request-part-count", "2")  # mended: the message goes
    assert tech.evaluate("() => document.querySelector('#request-part-count').validity.valid")

    reader = signed_in(chromium, base, "dr_li", language)
    reader.goto(f"{base}/reading/templates/")
    reader.click("#template-form button[type=submit]")
    assert reader.evaluate("() => document.querySelector('#template-body-part').validationMessage") == required
    for page in (tech, reader):
        assert page.errors == []


def test_the_admins_calendar_names_the_weekdays_in_chinese(live_server, day, chromium):  # noqa: F811
    """The roster's date picker in the Django admin headed its days S M T W T F S on the
    Chinese page (Django's Chinese catalogue leaves the one-letter weekdays in English)."""
    base = live_server.url
    admin = signed_in(chromium, base, "admin_zhao", "zh-hans")
    admin.goto(f"{base}/admin/facilities/rostershift/add/")
    admin.click("#calendarlink0")
    box = admin.locator("#calendarbox0")
    box.wait_for()
    weekdays = box.locator("table th").all_inner_texts()
    assert weekdays == ["一", "二", "三", "四", "五", "六", "日"]
    caption = box.locator("caption").inner_text()
    assert "月" in caption and not any(letter.isascii() and letter.isalpha() for letter in caption)
    assert "今天" in box.inner_text()
    assert admin.errors == []


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_the_turnaround_headline_keeps_each_figure_on_one_line(live_server, rolled_up, language, chromium):
    """At 1366x768 the English page broke the median's box into "36.30 (26.32–" / "50.83)"."""
    base = live_server.url
    admin = signed_in(chromium, base, "admin_zhao", language)
    admin.goto(f"{base}/dashboards/turnaround/")
    # In the wide Latin font a Linux browser gives English pages (the test's Chromium,
    # started in Chinese, would take the CJK font's narrower Latin letters).
    admin.evaluate("""() => { document.body.style.fontFamily = '"DejaVu Sans", sans-serif'; }""")
    lines = admin.evaluate(
        """() => ['#total-n', '#total-mean', '#total-median', '#total-share'].map((selector) => {
             const range = document.createRange();
             range.selectNodeContents(document.querySelector(selector));
             // Text boxes of one line overlap; a wrapped line starts below the one before.
             const boxes = [...range.getClientRects()].filter((r) => r.width > 0).sort((a, b) => a.top - b.top);
             let lines = 0, bottom = -Infinity;
             for (const box of boxes) {
               if (box.top >= bottom - 2) {
                 lines += 1;
                 bottom = box.bottom;
               } else {
                 bottom = Math.max(bottom, box.bottom);
               }
             }
             return lines;
           })"""
    )
    assert lines == [1, 1, 1, 1]
    assert admin.errors == []


def test_the_signers_time_stays_on_one_line_in_the_english_report_panel(live_server, day, chromium):  # noqa: F811
    """At 1366x768 the reading page's report panel wrote "李明 · 2026-12-" / "07 07:03"."""
    base = live_server.url
    for username, url in (("dr_li", f"/reading/{day['signed']}/"), ("tech_xuanwo", f"/consults/{day['signed']}/")):
        page = signed_in(chromium, base, username, "en")
        page.goto(f"{base}{url}")
        page.evaluate("""() => { document.body.style.fontFamily = '"DejaVu Sans", sans-serif'; }""")
        heights = page.evaluate(
            """() => [...document.querySelectorAll('dl.signature time')].map((time) => time.getClientRects().length)"""
        )
        assert heights and all(rects == 1 for rects in heights), (url, heights)
        assert page.errors == []


# Every page of each role's day, {placeholders} from the `day` fixture.
HEADER_PAGES = {
    "admin_zhao": [
        "/dashboard/",
        "/dashboards/savings/",
        "/dashboards/travel/",
        "/dashboards/turnaround/",
        "/dashboards/timeliness/",
        "/dashboards/workload/",
        "/dashboards/volume/",
        "/dashboards/growth/",
        "/dashboards/exams/",
        "/dashboards/monthly/",
        "/consults/open/",
        "/audit/",
        "/status/",
        "/accounts/password/",
        "/accounts/tokens/",
    ],
    "dr_li": [
        "/worklist/",
        "/reading/{wang}/",
        "/reading/templates/",
        "/reading/phrases/",
        "/reading/alerts/",
        "/consults/{signed}/",
        "/viewer/{signed_study}/",
    ],
    "tech_xuanwo": [
        "/facilities/{township}/",
        "/orders/",
        "/consults/{signed}/",
        "/studies/{signed_study}/",
        "/viewer/{signed_study}/",
    ],
}

# The header's items that must share its one row, and each its own line: a name is never
# broken in two.
HEADER_ROW = """() => {
  const header = document.querySelector('.site-header');
  const brand = header.querySelector('.brand').getBoundingClientRect();
  const middle = (brand.top + brand.bottom) / 2;
  const items = [header.querySelector('.brand'), ...header.querySelectorAll('.main-nav a, .header-tools > *')];
  return items.filter((item) => {
    const box = item.getBoundingClientRect();
    return box.top > middle || box.bottom < middle || box.height > 1.5 * brand.height;
  }).map((item) => item.textContent.trim().replace(/\\s+/g, ' '));
}"""


@pytest.mark.parametrize("language", ["zh-hans", "en"])
def test_the_header_keeps_to_one_row_on_every_page_at_1366(live_server, day, language, chromium):  # noqa: F811
    """At 1366x768 the administrator's English header wrapped to a second row: the brand,
    five menu items, the language switch, name, role, facility and three account links."""
    base = live_server.url
    for username, paths in HEADER_PAGES.items():
        page = signed_in(chromium, base, username, language)
        for path in paths:
            page.goto(base + path.format(**day))
            assert page.evaluate(HEADER_ROW) == [], f"{username} {path}: off the header's row"
        # The account's pages and the logout are under the name, and the menu stays on screen.
        page.click(".account-menu summary")
        menu = page.locator(".account-menu-items")
        assert menu.locator(".logout button").is_visible()
        assert menu.locator("a[href='/accounts/password/']").is_visible()
        box = menu.bounding_box()
        assert box is not None and box["x"] + box["width"] <= VIEWPORT["width"]
        page.locator(".site-header").click(position={"x": 4, "y": 4})  # a click elsewhere closes it
        assert not menu.is_visible()
        assert page.errors == [], username


@pytest.fixture
def described(day, tmp_path):  # noqa: F811
    """Another chest CT of 张伟, its series described by the console (胸部 平扫 5mm) and its
    institution named as the township's console names it."""
    from facilities.models import Modality
    from tests.test_daily_screens_browser import ingest_study

    study = ingest_study(
        tmp_path / "described",
        Modality.objects.get(ae_title="XUANWO_CT"),
        name="Zhang^Wei=张^伟",
        patient_id="XW0003",
        sex="M",
        birth="19550220",
        SeriesDescription="胸部 平扫 5mm",
        InstitutionName="漩涡镇中心卫生院",
    )
    return {**day, "described": study.study_uid}


@pytest.mark.parametrize(
    ("language", "institution", "study", "series"),
    [
        ("zh-hans", "漩涡镇中心卫生院", "胸部 CT 平扫", "CT 胸部 平扫 5mm"),
        ("en", "Xuanwo Central Township Health Centre", "Chest CT non-contrast", "CT Chest non-contrast 5mm"),
    ],
)
def test_the_viewer_names_the_study_and_series_as_the_lists_do(
    live_server, described, language, institution, study, series, chromium
):
    """The English viewer's overlay and series list wrote the consoles' descriptions in
    Chinese (胸部 CT 平扫) where the lists wrote them in English (cloudpacs.descriptions),
    and the township as its console writes it (漩涡镇中心卫生院)."""
    base = live_server.url
    tech = signed_in(chromium, base, "tech_xuanwo", language)
    tech.goto(f"{base}/viewer/{described['described']}/")
    tech.wait_for_function("() => window.yunyingViewer?.viewers[0].panes[0].stackMs != null", timeout=60_000)
    overlay = tech.locator('[data-pane="0"] [data-overlay="tr"]').inner_text().splitlines()
    assert institution in overlay and study in overlay and series in overlay
    tech.wait_for_selector(".yv-thumb-caption")
    assert tech.locator(".yv-thumb-caption").first.inner_text() == series.replace("CT ", "CT #1 ", 1)
    # The earlier study of the same patient, offered as a prior, as the lists name it too.
    prior = tech.locator("[data-prior] option", has_text="2025").first.inner_text()
    assert prior.endswith(study)
    assert tech.errors == []


def test_the_reading_panels_buttons_stay_inside_it_in_english(live_server, day, chromium):  # noqa: F811
    """At 1366x768 the English list of readers ("Least loaded radiologist on duty") pushed
    its Reassign button past the reading panel's edge, cut to "Reas"."""
    base = live_server.url
    reader = signed_in(chromium, base, "dr_li", "en")
    reader.goto(f"{base}/reading/{day['wang']}/")
    assert reader.locator("#actions button[name='reassign']").is_visible()
    outside = reader.evaluate(
        """() => {
          const panel = document.querySelector('#actions').getBoundingClientRect();
          return [...document.querySelectorAll('#actions button, #actions select')]
            .filter((field) => field.getBoundingClientRect().right > panel.right + 0.5)
            .map((field) => field.textContent.trim().slice(0, 40));
        }"""
    )
    assert outside == []
    assert reader.errors == []


def test_the_worklists_times_and_names_are_not_broken_over_two_lines(live_server, day, chromium):  # noqa: F811
    """At 1366x768 the English worklist wrote each arrival as "2026-12-07" / "09:00" and a
    patient as "Chen" / "Lanfang", the columns squeezed by "Overdue by 1 minute"."""
    base = live_server.url
    reader = signed_in(chromium, base, "dr_li", "en")
    reader.goto(f"{base}/worklist/")
    broken = reader.evaluate(
        """() => [...document.querySelectorAll('#worklist td.when, #worklist td.person')].filter((cell) => {
          const range = document.createRange();
          range.selectNodeContents(cell);
          const tops = new Set([...range.getClientRects()].map((line) => Math.round(line.top / 4)));
          return tops.size > 1;
        }).map((cell) => cell.textContent.trim())"""
    )
    assert reader.locator("#worklist td.when").count() == 3
    assert broken == []
