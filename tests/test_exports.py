"""Exports of the dashboards: they open with the csv module and openpyxl, and hold the same
numbers as the pages."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse
from openpyxl import load_workbook

from billing.services import ensure_shaanxi_2021_schedule, record_saving, reverse_entry
from consults.models import Priority
from facilities.models import AuditEvent, ExamKind
from tests.test_dashboards import make_exam, page_tables, rows_by_label


def export_url(name: str, table: str, fmt: str) -> str:
    return reverse(f"billing:dashboards:{name}", args=[table, fmt])


def body_of(response) -> bytes:
    """The bytes of a response, streamed (as the exports are) or not."""
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def as_exported(cells: list[str]) -> list[str]:
    """A page's cells as the CSV writes them: no thousands separators (so a spreadsheet
    reads numbers), and nothing where the page shows "-" for a figure that does not exist."""
    return ["" if c == "-" else c.replace(",", "") for c in cells]


def read_csv(response) -> list[list[str]]:
    body = body_of(response).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body.removeprefix("\ufeff"))))


def read_xlsx(response) -> list[list[object]]:
    book = load_workbook(io.BytesIO(body_of(response)), read_only=True)
    return [list(row) for row in book.active.iter_rows(values_only=True)]


@pytest.fixture
def exams(township, other_township, ct_modality, dr_modality, radiologist, administrator):
    ensure_shaanxi_2021_schedule()
    made = [
        make_exam(township, ExamKind.CT, date(2024, 3, 1), 30, radiologist, parts=2),
        make_exam(township, ExamKind.CT, date(2025, 1, 5), 70, radiologist, priority=Priority.URGENT),
        make_exam(township, ExamKind.DR, date(2024, 3, 2), 20, radiologist),
        make_exam(other_township, ExamKind.DR, date(2024, 5, 6), 40, radiologist, parts=3),
    ]
    entries = [record_saving(c) for c in made]
    reverse_entry(entries[1], "重复检查", administrator)
    return made


def test_the_township_table_exports_hold_the_numbers_of_the_page(exams, administrator_client) -> None:
    page = rows_by_label(page_tables(administrator_client.get(reverse("billing:dashboards:savings")))["by-township"])
    rows = read_csv(administrator_client.get(export_url("savings_export", "township", "csv")))
    assert rows[0] == ["乡镇", "CT 节省（元）", "DR 节省（元）", "记录数", "节省（元）", "节省（万元）"]
    exported = {r[0]: r[1:] for r in rows[1:]}
    assert exported == {label: as_exported(values) for label, values in page.items() if label != "乡镇"}
    sheet = read_xlsx(administrator_client.get(export_url("savings_export", "township", "xlsx")))
    assert sheet[0] == rows[0]
    for line in sheet[1:]:
        assert ["" if v is None else Decimal(str(v)) for v in line[1:]] == [
            Decimal(v) if v else "" for v in exported[line[0]]
        ]


@pytest.mark.parametrize("table,page_id", [("kind", "by-kind"), ("year", "by-year"), ("month", "by-month")])
def test_each_savings_table_exports_as_on_the_page(exams, administrator_client, table, page_id) -> None:
    page = page_tables(administrator_client.get(reverse("billing:dashboards:savings")))[page_id]
    rows = read_csv(administrator_client.get(export_url("savings_export", table, "csv")))
    assert rows[1:] == [[row[0], *as_exported(row[1:])] for row in page[1:]]
    sheet = read_xlsx(administrator_client.get(export_url("savings_export", table, "xlsx")))
    assert len(sheet) == len(rows)
    assert [str(v) for v in sheet[-1][:3]] == rows[-1][:3]


def test_the_ledger_entries_export_every_entry_with_its_reversal(exams, administrator_client) -> None:
    rows = read_csv(administrator_client.get(export_url("savings_export", "entries", "csv")))
    assert len(rows) == 1 + 5
    savings = [Decimal(r[9]) for r in rows[1:]]
    assert sum(savings) == Decimal("92.00")  # 60 + 8 + 24, the 30 reversed
    assert next(r for r in rows[1:] if r[11] == "重复检查")[9] == "-30.00"
    sheet = read_xlsx(administrator_client.get(export_url("savings_export", "entries", "xlsx")))
    assert sum(Decimal(str(r[9])) for r in sheet[1:]) == Decimal("92.00")
    assert sheet[1][2].date() == date(2024, 3, 1)


def test_exports_follow_the_filters(exams, administrator_client, township) -> None:
    rows = read_csv(
        administrator_client.get(export_url("savings_export", "entries", "csv"), {"township": str(township.uuid)})
    )
    assert {r[3] for r in rows[1:]} == {"漩涡"}


def test_a_technologist_exports_their_own_township_only(exams, technologist_client) -> None:
    rows = read_csv(technologist_client.get(export_url("savings_export", "township", "csv")))
    assert [r[0] for r in rows[1:]] == ["漩涡", "合计"]


def test_the_volume_exports_match_the_page(exams, administrator_client) -> None:
    page = rows_by_label(page_tables(administrator_client.get(reverse("billing:dashboards:volume")))["volume-DR"])
    rows = read_csv(administrator_client.get(export_url("volume_export", "DR", "csv")))
    for row in rows[1:]:
        assert [v if v != "0" else "" for v in row[1:]] == as_exported(page[row[0]])
    sheet = read_xlsx(administrator_client.get(export_url("volume_export", "DR", "xlsx")))
    assert sheet[-1] == ["合计", 2, 0, 2]


def test_the_turnaround_exports_match_the_page(exams, administrator_client) -> None:
    response = administrator_client.get(reverse("billing:dashboards:turnaround"))
    page = rows_by_label(page_tables(response)["turnaround-township"])
    rows = read_csv(administrator_client.get(export_url("turnaround_export", "township", "csv")))
    for row in rows[1:]:
        n, mean = page[row[0]][0], page[row[0]][1].split(" ± ")[0]
        assert [row[1], row[2]] == as_exported([n, mean])
    sheet = read_xlsx(administrator_client.get(export_url("turnaround_export", "township", "xlsx")))
    assert [line[1] for line in sheet[1:]] == [int(r[1]) for r in rows[1:]]


def test_an_unknown_table_or_format_is_404(exams, administrator_client) -> None:
    assert administrator_client.get(export_url("savings_export", "township", "pdf")).status_code == 404
    assert administrator_client.get(export_url("savings_export", "patients", "csv")).status_code == 404
    assert administrator_client.get(export_url("volume_export", "MR", "csv")).status_code == 404


def test_a_bad_filter_on_an_export_is_a_form_error(exams, administrator_client) -> None:
    response = administrator_client.get(export_url("savings_export", "entries", "csv"), {"date_to": "yesterday"})
    assert response.status_code == 400


# ---------------------------------------------------------------------------- audit


def exports_audited() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="billing.export.downloaded").order_by("pk"))


@pytest.mark.parametrize(
    ("name", "table", "fmt"),
    [
        ("savings_export", "entries", "csv"),
        ("savings_export", "month", "xlsx"),
        ("turnaround_export", "radiologist", "csv"),
        ("volume_export", "CT", "xlsx"),
    ],
)
def test_every_export_is_audited_with_who_what_and_the_filters(
    exams, administrator_client, administrator, township, name, table, fmt
) -> None:
    params = {"date_from": "2024-01-01", "township": str(township.uuid), "modality": "CT"}
    assert administrator_client.get(export_url(name, table, fmt), params).status_code == 200
    [event] = exports_audited()
    assert event.actor == administrator
    assert event.facility == township
    prefix = name.removesuffix("_export")
    assert (event.object_type, event.object_id) == ("billing.export", f"{prefix}-{table}")
    assert event.detail == {"table": f"{prefix}-{table}", "format": fmt, "filters": params}


def test_a_technologists_export_is_audited_under_their_township(exams, technologist_client, township) -> None:
    technologist_client.get(export_url("savings_export", "township", "csv"))
    [event] = exports_audited()
    assert event.facility == township
    assert event.detail["filters"] == {"township": str(township.uuid)}


def test_a_refused_or_invalid_export_is_not_audited_as_a_download(exams, administrator_client, outsider_client) -> None:
    administrator_client.get(export_url("savings_export", "patients", "csv"))
    administrator_client.get(export_url("savings_export", "entries", "csv"), {"date_to": "yesterday"})
    outsider_client.get(export_url("savings_export", "entries", "csv"), {"township": "nonsense"})
    assert exports_audited() == []
