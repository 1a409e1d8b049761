"""The dashboards on a few hand-made exams: what each page counts, its filters, the exams
behind each number, and who may see what."""

from __future__ import annotations

import math
import re
import statistics
from datetime import date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from django.db.models import F
from django.test import Client
from django.urls import reverse

from billing import dashboards, histogram, rollup
from billing.dashboards import Filters
from billing.services import ensure_shaanxi_2021_schedule, record_saving, reverse_entry
from consults.changes import Change, publish
from consults.models import Consult, Priority
from consults.rules import due_at_for
from facilities.models import ExamKind, Facility, Modality, User
from tests.conftest import login
from tests.factories import make_user

TZ = ZoneInfo("Asia/Shanghai")
SAVINGS = reverse("billing:dashboards:savings")
TURNAROUND = reverse("billing:dashboards:turnaround")
VOLUME = reverse("billing:dashboards:volume")
EXAMS = reverse("billing:dashboards:exams")


class _Tables(HTMLParser):
    """The text of every cell of every <table id=...> of a page, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def page_tables(response) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(response.content.decode())
    return parser.tables


def rows_by_label(table: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table}


def make_exam(
    facility: Facility,
    kind: str,
    day: date,
    minutes: float,
    radiologist: User | None = None,
    *,
    priority: str = Priority.ROUTINE,
    parts: int = 1,
    signed: bool = True,
    hour: int = 9,
) -> Consult:
    """A consult as the reading workflow leaves it, with the change it publishes when it
    arrives (consults' change feed, which the rollup follows)."""
    arrived = datetime(day.year, day.month, day.day, hour, tzinfo=TZ)
    total = timedelta(minutes=minutes)
    consult = Consult.objects.create(
        facility=facility,
        modality=Modality.objects.filter(facility=facility, kind=kind).first(),
        kind=kind,
        exam_date=day,
        body_parts=parts,
        priority=priority,
        status=Consult.Status.DELIVERED if signed else Consult.Status.ASSIGNED,
        radiologist=radiologist,
        arrived_at=arrived,
        assigned_at=arrived + total / 10,
        opened_at=arrived + total / 2 if signed else None,
        signed_at=arrived + total if signed else None,
        delivered_at=arrived + total + timedelta(seconds=30) if signed else None,
    )
    # Its time limit, stored as the workflow stores it when a consult arrives.
    Consult.objects.filter(pk=consult.pk).update(due_at=due_at_for(consult))
    consult.refresh_from_db()
    publish(consult, Change.CREATED)
    return consult


@pytest.fixture
def exams(township, other_township, ct_modality, dr_modality, radiologist) -> dict[str, list[Consult]]:
    """Xuanwo: 3 CT (2024, 2024, 2025) and 2 DR; Pingliang: 1 DR; one unsigned CT."""
    ensure_shaanxi_2021_schedule()
    Modality.objects.create(facility=other_township, kind=ExamKind.DR, ae_title="PINGLIANG_DR")
    second = make_user(User.Role.RADIOLOGIST, None, username="dr_wang", display_name="王医生")
    xuanwo = [
        make_exam(township, ExamKind.CT, date(2024, 3, 1), 30, radiologist, parts=2),
        make_exam(township, ExamKind.CT, date(2024, 7, 9), 50, radiologist, priority=Priority.EMERGENCY),
        make_exam(township, ExamKind.CT, date(2025, 1, 5), 70, second),
        make_exam(township, ExamKind.DR, date(2024, 3, 2), 20, second),
        make_exam(township, ExamKind.DR, date(2025, 2, 3), 130, radiologist),
    ]
    pingliang = [make_exam(other_township, ExamKind.DR, date(2024, 5, 6), 40, second)]
    unsigned = [make_exam(township, ExamKind.CT, date(2025, 2, 4), 0, None, signed=False)]
    for consult in xuanwo + pingliang:
        record_saving(consult)
    # The unsigned exam has no ledger entry: the rollup learns of it from the change feed.
    rollup.follow_consult_changes()
    return {"xuanwo": xuanwo, "pingliang": pingliang, "unsigned": unsigned}


# ---------------------------------------------------------------------------- the queries


def test_savings_sum_the_ledger_by_township_kind_year_and_month(exams, township) -> None:
    data = dashboards.savings(Filters())
    # CT saves 30 yuan a part, DR 8: Xuanwo 60 + 30 + 30 + 8 + 8, Pingliang 8.
    assert data.total.saving == Decimal("144.00")
    assert data.total.entries == 6
    assert data.total.body_parts == 7
    assert [(t.facility.short_name, t.saving) for t in data.by_township] == [
        ("漩涡", Decimal("136.00")),
        ("平梁", Decimal("8.00")),
    ]
    assert {r.key: r.saving for r in data.by_kind} == {"CT": Decimal("120.00"), "DR": Decimal("24.00")}
    assert {r.key: r.saving for r in data.by_year} == {"2024": Decimal("106.00"), "2025": Decimal("38.00")}
    assert data.by_month[0].key == "2024-03"
    assert data.by_month[0].saving == Decimal("68.00")
    assert data.total.saving_wan == Decimal("0.01")


def test_a_reversal_takes_its_saving_out_of_the_totals(exams, administrator) -> None:
    entry = exams["xuanwo"][0].ledger_entries.get()
    reverse_entry(entry, "部位数录入错误", administrator)
    data = dashboards.savings(Filters())
    assert data.total.saving == Decimal("84.00")
    assert data.total.entries == 7
    assert {r.key: r.saving for r in data.by_kind}["CT"] == Decimal("60.00")


def test_volume_counts_exams_that_are_not_cancelled_by_township_and_year(exams, township) -> None:
    tables = {t.kind: t for t in dashboards.volume(Filters())}
    assert tables["CT"].years == [2024, 2025]
    # The unsigned CT of 2025 counts: it is an exam, read or not.
    assert [(r.facility.short_name, r.counts) for r in tables["CT"].rows] == [("漩涡", [2, 2])]
    assert [(r.facility.short_name, r.counts) for r in tables["DR"].rows] == [("漩涡", [1, 1]), ("平梁", [1, 0])]


def test_turnaround_gives_mean_sd_and_quartiles_of_the_signed_consults(exams, township) -> None:
    data = dashboards.turnaround(Filters())
    minutes = [30, 50, 70, 20, 130, 40]
    assert data.total.n == 6
    assert math.isclose(data.total.consult.mean, statistics.mean(minutes), abs_tol=1e-6)
    assert math.isclose(data.total.consult.sd, statistics.stdev(minutes), abs_tol=1e-6)
    # Quartiles come from the rollup's histograms: exact to a bin, 1.09 % of the value.
    assert math.isclose(data.total.consult.median, 45.0, rel_tol=histogram.RELATIVE_ERROR)
    q1, _median, q3 = statistics.quantiles(minutes, n=4, method="inclusive")
    assert math.isclose(data.total.consult.q1, q1, rel_tol=histogram.RELATIVE_ERROR)
    assert math.isclose(data.total.consult.q3, q3, rel_tol=histogram.RELATIVE_ERROR)
    xuanwo = next(r for r in data.by_township if r.label == "漩涡")
    assert math.isclose(xuanwo.consult.mean, 60.0, abs_tol=1e-6)
    # Opened halfway, so the opened->signed stage is half of each consult.
    assert math.isclose(xuanwo.stages["sign"].mean, 30.0, abs_tol=1e-6)
    assert math.isclose(xuanwo.stages["deliver"].median, 0.5, rel_tol=histogram.RELATIVE_ERROR)


def test_the_share_within_the_time_limit_uses_priority_and_kind(exams) -> None:
    data = dashboards.turnaround(Filters())
    # Emergency CT 50 min <= 60; routine DR 130 > 120; all the others are within.
    assert data.total.within_limit == 5
    by_kind = {r.key: r for r in data.by_kind}
    assert by_kind["DR"].within_limit == 2
    assert by_kind["DR"].n == 3


def test_within_the_limit_means_signed_by_the_consults_stored_due_at(exams, settings) -> None:
    """One rule: the limit each consult got when it arrived (due_at), not a table of the
    dashboards' own, and not today's settings."""
    late_dr = Consult.objects.get(kind=ExamKind.DR, signed_at__gt=F("due_at"))  # routine DR, 130 min > 120
    emergency_ct = Consult.objects.get(priority=Priority.EMERGENCY)  # 50 min <= 60
    # The county lengthens routine DR and shortens emergency CT after the fact: the stored
    # limits stand, as they do for the workflow's escalation.
    settings.CONSULT_TIME_LIMITS = {**settings.CONSULT_TIME_LIMITS, "routine": {"DR": 240, "CT": 240, "CT_HEAD": 240}}
    settings.CONSULT_TIME_LIMITS["emergency"] = {"DR": 30, "CT": 10, "CT_HEAD": 10}
    rollup.rebuild()
    assert dashboards.turnaround(Filters()).total.within_limit == 5
    # A consult whose own due_at was later (its request's priority corrected) counts by it.
    Consult.objects.filter(pk=late_dr.pk).update(due_at=late_dr.signed_at)
    Consult.objects.filter(pk=emergency_ct.pk).update(due_at=emergency_ct.signed_at - timedelta(seconds=1))
    rollup.rebuild()
    data = dashboards.turnaround(Filters())
    assert data.total.within_limit == 5
    assert {r.key: r.within_limit for r in data.by_kind} == {"CT": 2, "DR": 3}
    assert dashboards.turnaround(Filters(), source="raw").total.within_limit == 5


def test_the_turnaround_page_shows_the_configured_limits(administrator_client, exams, settings) -> None:
    settings.CONSULT_TIME_LIMITS = {
        "emergency": {"DR": 25, "CT": 55, "CT_HEAD": 20},
        "urgent": {"DR": 60, "CT": 120, "CT_HEAD": 60},
        "routine": {"DR": 120, "CT": 180},
    }
    page = administrator_client.get(reverse("billing:dashboards:turnaround")).content.decode()
    table = page[page.index('id="time-limits"') :]
    table = table[: table.index("</table>")]
    cells = re.findall(r'<td class="num">(\d+)</td>', table)
    # Emergency, urgent, routine; DR, CT, head CT (a cell not configured keeps its default).
    assert cells == ["25", "55", "20", "60", "120", "60", "120", "180", "240"]


def test_figure_2_is_ordered_by_mean_and_figure_3_by_count(exams) -> None:
    data = dashboards.turnaround(Filters())
    assert [r.label for r in data.figure2] == ["平梁", "漩涡"]
    # A tie keeps the radiologists in name order.
    assert [(r.label, r.n) for r in data.figure3] == [("李医生", 3), ("王医生", 3)]


def test_radiologists_are_listed_by_pinyin_not_by_code_point(township, ct_modality, county) -> None:
    """The turnaround and workload tables and the filters' lists put 刘 before 张 before 李
    before 王 before 陈 (code points); a Chinese reader looks for 陈 李 刘 王 张."""
    from billing.forms import ExamListForm, WorkloadForm

    names = ["张伟", "王芳", "刘洋", "李娜", "陈静"]
    for n, name in enumerate(names):
        reader = make_user(User.Role.RADIOLOGIST, county, username=f"dr_{n}", display_name=name)
        make_exam(township, ExamKind.CT, date(2025, 3, 3), 30, reader)
    rollup.follow_consult_changes()
    by_pinyin = ["陈静", "李娜", "刘洋", "王芳", "张伟"]
    assert sorted(names) != by_pinyin
    for source in ("rollup", "raw"):
        assert [r.label for r in dashboards.turnaround(Filters(), source=source).by_radiologist] == by_pinyin
    assert [str(w.radiologist) for w in dashboards.workload(Filters()).radiologists] == by_pinyin
    for form in (WorkloadForm(townships=Facility.objects.all()), ExamListForm(townships=Facility.objects.all())):
        assert [label for _value, label in form.fields["radiologist"].choices][1:] == by_pinyin


def test_turnaround_periods_can_be_quarters_or_months(exams) -> None:
    quarters = dashboards.turnaround(Filters(), "quarter")
    by_quarter = [(r.key, r.n) for r in quarters.by_period]
    assert by_quarter == [("2024-Q1", 2), ("2024-Q2", 1), ("2024-Q3", 1), ("2025-Q1", 2)]
    months = dashboards.turnaround(Filters(), "month")
    assert months.by_period[0].key == "2024-03"


def test_the_histogram_counts_every_signed_consult(exams) -> None:
    data = dashboards.turnaround(Filters())
    assert sum(n for _label, n in data.histogram) == 6
    assert dict(data.histogram)["130–140"] == 1


def test_filters_restrict_every_query(exams, township) -> None:
    only = Filters(date_from=date(2025, 1, 1), facility=township, kind=ExamKind.CT)
    assert dashboards.savings(only).total.saving == Decimal("30.00")
    assert dashboards.turnaround(only).total.n == 1
    assert [t.total for t in dashboards.volume(only)] == [2]


# ---------------------------------------------------------------------------- the pages


def test_the_savings_page_shows_the_totals_in_yuan_and_wan(exams, administrator_client: Client) -> None:
    response = administrator_client.get(SAVINGS)
    assert response.status_code == 200
    tables = page_tables(response)
    by_township = rows_by_label(tables["by-township"])
    assert by_township["漩涡"] == ["120.00", "16.00", "5", "136.00", "0.01"]
    assert by_township["合计"] == ["120.00", "24.00", "6", "144.00", "0.01"]
    assert rows_by_label(tables["by-year"])["2024"] == ["4", "5", "106.00", "0.01"]
    assert b'id="figure1"' in response.content
    assert b"vendor/echarts/echarts.min.js" in response.content


def test_the_volume_page_lays_out_one_table_per_kind_with_dashes_for_zero(exams, administrator_client) -> None:
    tables = page_tables(administrator_client.get(VOLUME))
    assert tables["volume-DR"][0] == ["乡镇", "2024", "2025", "合计"]
    assert rows_by_label(tables["volume-DR"])["平梁"] == ["1", "-", "1"]
    assert rows_by_label(tables["volume-CT"])["漩涡"] == ["2", "2", "4"]


def test_the_turnaround_page_shows_every_grouping_and_the_charts(exams, administrator_client) -> None:
    response = administrator_client.get(TURNAROUND, {"period": "quarter"})
    assert response.status_code == 200
    tables = page_tables(response)
    # One consult: no standard deviation, a median equal to its quartiles.
    pingliang = rows_by_label(tables["turnaround-township"])["平梁"]
    assert pingliang[:4] == ["1", "40.00 ± –", "40.00 (40.00–40.00)", "100.0 %"]
    assert "2024-Q2" in rows_by_label(tables["turnaround-period"])
    for chart in (b'id="figure2"', b'id="figure3"', b'id="histogram"'):
        assert chart in response.content


def test_each_number_links_to_the_exams_behind_it(exams, administrator_client, township) -> None:
    response = administrator_client.get(EXAMS, {"township": str(township.uuid), "modality": "CT", "year": "2024"})
    assert response.status_code == 200
    assert response.context["count"] == 2
    signed = administrator_client.get(EXAMS, {"modality": "CT", "basis": "signed"})
    assert signed.context["count"] == 3
    ledger = administrator_client.get(EXAMS, {"basis": "ledger", "month": "2024-03"})
    assert ledger.context["count"] == 2
    link = f"{EXAMS}?township={township.uuid}&amp;modality=CT&amp;year=2024&amp;basis=all"
    assert link.encode() in administrator_client.get(VOLUME).content


def test_the_exam_list_is_paginated(exams, administrator_client) -> None:
    response = administrator_client.get(EXAMS, {"page": "2"})
    assert response.status_code == 200
    assert response.context["page"].number == 1  # one page only: get_page falls back to the last


def test_the_exam_list_shows_the_newest_exams_first(exams, administrator_client) -> None:
    response = administrator_client.get(EXAMS, {"basis": "all"})
    dates = [consult.exam_date for consult in response.context["page"]]
    assert len(dates) == 7
    assert dates == sorted(dates, reverse=True)
    assert dates[0] == date(2025, 2, 4)


def test_the_quarter_is_chosen_from_a_list_and_a_quarters_link_still_filters(exams, administrator_client) -> None:
    """The 季度 box was a number field one digit wide."""
    response = administrator_client.get(EXAMS, {"year": "2024", "quarter": "1"})
    assert response.context["count"] == 2
    page = response.content.decode()
    quarter = re.search(r'<select name="quarter"[^>]*>(.*?)</select>', page, re.S)
    assert quarter is not None
    options = re.findall(r'<option value="(\d?)"[^>]*>([^<]*)</option>', quarter.group(1))
    assert options == [("", "全年"), ("1", "第一季度"), ("2", "第二季度"), ("3", "第三季度"), ("4", "第四季度")]
    assert '<option value="1" selected>' in quarter.group(1)
    assert administrator_client.get(EXAMS, {"year": "2024", "quarter": "5"}).status_code == 400


def test_a_bad_date_is_a_form_error_not_a_server_error(exams, administrator_client) -> None:
    for page in (SAVINGS, TURNAROUND, VOLUME, EXAMS):
        response = administrator_client.get(page, {"date_from": "2024-13-45"})
        assert response.status_code == 400
        assert b'id="filter-errors"' in response.content


def test_a_date_range_backwards_is_a_form_error(exams, administrator_client) -> None:
    response = administrator_client.get(VOLUME, {"date_from": "2025-01-01", "date_to": "2024-01-01"})
    assert response.status_code == 400
    assert "起始日期不能晚于截止日期" in response.content.decode()


def test_an_unknown_township_or_modality_is_a_form_error_for_an_administrator(exams, administrator_client) -> None:
    assert administrator_client.get(SAVINGS, {"township": "not-a-uuid"}).status_code == 400
    assert administrator_client.get(SAVINGS, {"modality": "MR"}).status_code == 400
    assert administrator_client.get(TURNAROUND, {"period": "decade"}).status_code == 400


def test_filters_on_the_page_change_the_figures(exams, administrator_client, township) -> None:
    response = administrator_client.get(SAVINGS, {"township": str(township.uuid), "date_from": "2025-01-01"})
    by_township = rows_by_label(page_tables(response)["by-township"])
    assert list(by_township) == ["乡镇", "漩涡", "合计"]
    assert by_township["漩涡"][-2] == "38.00"


# ---------------------------------------------------------------------------- access


def test_a_technologist_sees_only_their_own_township(exams, technologist_client) -> None:
    response = technologist_client.get(SAVINGS)
    assert response.status_code == 200
    assert list(rows_by_label(page_tables(response)["by-township"])) == ["乡镇", "漩涡", "合计"]
    volume = page_tables(technologist_client.get(VOLUME))
    assert "平梁" not in rows_by_label(volume["volume-DR"])
    assert technologist_client.get(EXAMS).context["count"] == 6
    assert technologist_client.get(TURNAROUND).context["data"].total.n == 5


def test_a_technologist_asking_for_another_township_gets_404(exams, technologist_client, other_township) -> None:
    for page in (SAVINGS, TURNAROUND, VOLUME, EXAMS):
        assert technologist_client.get(page, {"township": str(other_township.uuid)}).status_code == 404
    export = reverse("billing:dashboards:savings_export", args=["entries", "csv"])
    assert technologist_client.get(export, {"township": str(other_township.uuid)}).status_code == 404


def test_the_other_townships_technologist_sees_none_of_xuanwo(exams, outsider_client, township) -> None:
    assert outsider_client.get(SAVINGS, {"township": str(township.uuid)}).status_code == 404
    response = outsider_client.get(SAVINGS)
    assert rows_by_label(page_tables(response)["by-township"])["合计"][-2] == "8.00"


def test_a_radiologist_sees_turnaround_and_volume_for_all_but_not_the_money(exams, radiologist_client) -> None:
    assert radiologist_client.get(TURNAROUND).context["data"].total.n == 6
    assert radiologist_client.get(VOLUME).status_code == 200
    assert radiologist_client.get(EXAMS, {"basis": "signed"}).status_code == 200
    assert radiologist_client.get(SAVINGS).status_code == 403
    export = reverse("billing:dashboards:savings_export", args=["township", "csv"])
    assert radiologist_client.get(export).status_code == 403
    assert radiologist_client.get(EXAMS, {"basis": "ledger"}).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(exams) -> None:
    client = Client()
    for page in (SAVINGS, TURNAROUND, VOLUME, EXAMS):
        response = client.get(page)
        assert response.status_code == 302
        assert reverse("login") in response["Location"]


def test_an_administrator_sees_every_township(exams, administrator_client) -> None:
    response = administrator_client.get(TURNAROUND)
    assert [r.label for r in response.context["data"].by_township] == ["漩涡", "平梁"]


def test_a_user_without_a_role_is_refused(exams, county) -> None:
    nobody = make_user("", county, username="nobody")
    assert login(nobody).get(VOLUME).status_code == 403
