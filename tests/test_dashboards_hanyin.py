"""With the Hanyin demo loaded, the dashboards reproduce the paper: Tables 1 and 2 exactly,
Figure 2 within 1 %. The paper's figures are written out here, not read from the seed, so
the seed and the pages are checked against the publication itself."""

from __future__ import annotations

import html
import re
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.test import Client
from django.urls import reverse

from billing import dashboards
from billing.dashboards import Filters
from billing.models import LedgerEntry
from billing.reports.travel import travel_raw
from facilities.models import Facility, User
from tests.test_admin_reports import travel_table
from tests.test_dashboards import page_tables, rows_by_label
from tests.test_exports import as_exported, read_csv

YEARS = ["2022", "2023", "2024", "2025"]
# Table 1: CT exams per township per year ("-": none).
TABLE_1 = {
    "漩涡": ["1590", "2788", "2455", "2157"],
    "涧池": ["-", "-", "2662", "3485"],
}
# Table 2: DR exams per township per year.
TABLE_2 = {
    "漩涡": ["1583", "2076", "2117", "2214"],
    "涧池": ["906", "101", "5473", "5385"],
    "汉阳": ["975", "704", "665", "892"],
    "龙垭": ["127", "591", "1971", "1449"],
    "蒲溪": ["215", "237", "490", "666"],
    "平梁": ["2584", "3979", "3914", "2361"],
    "上七": ["541", "669", "893", "425"],
    "双乳": ["56", "195", "527", "248"],
    "城关镇": ["48", "232", "330", "1148"],
    "铁佛寺": ["10", "7", "30", "115"],
    "观音河": ["7", "-", "-", "12"],
}
# Figure 2: mean consult time per township, minutes, in the paper's order.
FIGURE_2 = {
    "龙垭": 32.6,
    "平梁": 34.89,
    "涧池": 38.07,
    "城关镇": 41.45,
    "双乳": 44.6,
    "漩涡": 44.76,
    "观音河": 46.23,
    "汉阳": 53.54,
    "上七": 65.19,
    "蒲溪": 65.73,
    "铁佛寺": 77.89,
}


@pytest.fixture
def admin_client(hanyin, db) -> Client:
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    return client


def without_totals(table: list[list[str]]) -> dict[str, list[str]]:
    rows = rows_by_label(table)
    rows.pop("乡镇")
    rows.pop("合计")
    # The page separates thousands (5,473); the paper's tables do not.
    return {label: [v.replace(",", "") for v in values[:-1]] for label, values in rows.items()}


def test_the_volume_page_shows_tables_1_and_2_exactly(admin_client) -> None:
    tables = page_tables(admin_client.get(reverse("billing:dashboards:volume")))
    assert tables["volume-CT"][0] == ["乡镇", *YEARS, "合计"]
    assert without_totals(tables["volume-CT"]) == TABLE_1
    assert list(without_totals(tables["volume-CT"])) == list(TABLE_1)
    assert without_totals(tables["volume-DR"]) == TABLE_2
    assert list(without_totals(tables["volume-DR"])) == list(TABLE_2)
    assert rows_by_label(tables["volume-CT"])["合计"][-1] == "15,137"
    assert rows_by_label(tables["volume-DR"])["合计"][-1] == "47,168"


def test_the_turnaround_page_shows_figure_2_within_one_percent(admin_client) -> None:
    response = admin_client.get(reverse("billing:dashboards:turnaround"))
    rows = rows_by_label(page_tables(response)["turnaround-township"])
    for township, minutes in FIGURE_2.items():
        mean = float(rows[township][1].split(" ± ")[0])
        assert abs(mean - minutes) <= minutes * 0.01, township
    chart = response.context["charts"]["figure2"]
    assert chart["categories"] == list(FIGURE_2)
    for value, minutes in zip(chart["series"][0]["data"], FIGURE_2.values(), strict=True):
        assert abs(value - minutes) <= minutes * 0.01


def test_figure_3_counts_every_signed_consult_once(admin_client) -> None:
    response = admin_client.get(reverse("billing:dashboards:turnaround"))
    chart = response.context["charts"]["figure3"]
    assert len(chart["categories"]) == 9
    assert sum(chart["series"][0]["data"]) == 62305


def test_the_savings_page_totals_the_ledger(admin_client) -> None:
    response = admin_client.get(reverse("billing:dashboards:savings"))
    tables = page_tables(response)
    ledger = LedgerEntry.objects.aggregate(total=Sum("saving"))["total"]
    by_kind = rows_by_label(tables["by-kind"])
    assert rows_by_label(tables["by-township"])["合计"][-2] == "831,454.00"
    assert by_kind["CT"][0] == "15,137"
    assert by_kind["DR"][0] == "47,168"
    # The headline: one body part per exam at the 2021 list's differences (30 and 8 yuan),
    # in yuan and in 万元 by the one rule (half up to the cent of a 万元).
    assert ledger == Decimal("831454.00")
    assert by_kind["CT"][2:] == ["454,110.00", "45.41"]
    assert by_kind["DR"][2:] == ["377,344.00", "37.73"]
    page = response.content.decode()
    assert 'id="total-yuan" href="' in page
    assert ">831,454.00</a>" in page
    assert ">83.15</a>" in page
    # Hanyin's 2025 stops at 2025-09-28, and the page says so.
    assert "2025 只含部分时段：2025-01-01 至 2025-09-28 的检查。" in page
    exported = {
        r[0]: r
        for r in read_csv(admin_client.get(reverse("billing:dashboards:savings_export", args=["township", "csv"])))
    }
    for label, values in rows_by_label(tables["by-township"]).items():
        if label != "乡镇":
            assert exported[label][1:] == as_exported(values)


def test_a_townships_technologist_sees_its_own_rows_of_the_tables(hanyin, db) -> None:
    client = Client()
    client.force_login(User.objects.get(username="tech_jianchi"))
    tables = page_tables(client.get(reverse("billing:dashboards:volume")))
    assert without_totals(tables["volume-CT"]) == {"涧池": TABLE_1["涧池"]}
    assert without_totals(tables["volume-DR"]) == {"涧池": TABLE_2["涧池"]}
    other = Facility.objects.get(code="XUANWO")
    assert client.get(reverse("billing:dashboards:volume"), {"township": str(other.uuid)}).status_code == 404


def test_a_year_filter_keeps_the_tables_to_that_year(admin_client) -> None:
    response = admin_client.get(
        reverse("billing:dashboards:volume"), {"date_from": "2024-01-01", "date_to": "2024-12-31", "modality": "DR"}
    )
    tables = page_tables(response)
    assert "volume-CT" not in tables
    assert without_totals(tables["volume-DR"]) == {k: [v[2]] for k, v in TABLE_2.items()}


def links(response, marker: str) -> list[str]:
    hrefs = re.findall(r'href="([^"]+)"', response.content.decode())
    return list(dict.fromkeys(html.unescape(h) for h in hrefs if marker in h))


def test_every_drill_down_opens_a_consult_with_a_patient_and_a_report(hanyin, db) -> None:
    # A radiologist (the administrator's pages show money, and the consult page is the
    # clinicians'): each number on the volume and turnaround pages leads to its exams, and
    # the first exam of each list to its consult, which names the patient and shows the report.
    client = Client()
    client.force_login(User.objects.get(username="dr_li"))
    drill_downs: list[str] = []
    for page in ("volume", "turnaround"):
        drill_downs += links(client.get(reverse(f"billing:dashboards:{page}")), "/exams/")
    assert len(drill_downs) > 60
    consult_path = re.compile(r"/consults/[0-9a-f-]{36}/$")
    opened = set()
    for href in dict.fromkeys(drill_downs):
        listed = client.get(href)
        assert listed.status_code == 200, href
        consults = [h for h in links(listed, "/consults/") if consult_path.search(h)]
        assert consults, href
        detail = client.get(consults[0])
        assert detail.status_code == 200, consults[0]
        text = detail.content.decode()
        assert 'id="patient-name"' in text and 'id="report-impression"' in text, consults[0]
        opened.add(consults[0])
    assert len(opened) > 10


def test_the_demos_savings_per_exam_and_travel_add_up_to_the_headline(hanyin, db) -> None:
    # Here, not in test_admin_reports: a module whose tests hold data in a transaction
    # (module_transaction) cannot also use the seeded demo (conftest.order_held_data).
    data = dashboards.travel(Filters())
    assert data.saving == Decimal("831454.00")
    assert data.saving_per_exam == (data.saving / data.exams).quantize(Decimal("0.01"))
    assert data.unknown == []
    xuanwo = next(t for t in data.townships if t.facility.code == "XUANWO")
    assert xuanwo.facility.county_distance_km == 51
    assert data.patients < data.exams  # the demo's patients come back now and then
    raw = travel_raw(Filters())
    assert travel_table(data) == travel_table(raw)
    assert (data.exams, data.patients) == (raw.exams, raw.patients)
