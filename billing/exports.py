"""Exports of the dashboards' tables and of the ledger entries, as CSV and XLSX.

A sheet is built from the same dataclasses the pages render, so an exported number is the
number on the page. CSV is UTF-8 with a byte-order mark, which Excel needs to read Chinese;
XLSX keeps numbers as numbers (money as Decimal, shown with two decimals)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils.translation import gettext as _
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from billing.dashboards import STAGES, Savings, Summary, Turnaround, VolumeTable, wan
from billing.models import LedgerEntry

FORMATS = ("csv", "xlsx")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class Sheet:
    title: str
    header: list[str]
    rows: Iterable[list[Any]]


# ---------------------------------------------------------------------------- writers


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return value


def _csv_lines(sheet: Sheet) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff" + writer.writerow(sheet.header)
    for row in sheet.rows:
        yield writer.writerow([_csv_value(v) for v in row])


def csv_response(sheet: Sheet, filename: str) -> HttpResponse:
    response = HttpResponse("".join(_csv_lines(sheet)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def xlsx_bytes(sheet: Sheet) -> bytes:
    book = Workbook(write_only=True)
    ws = book.create_sheet(title=sheet.title[:31])
    ws.append(sheet.header)
    for row in sheet.rows:
        cells = []
        for value in row:
            cell = WriteOnlyCell(ws, value=round(value, 2) if isinstance(value, float) else value)
            if isinstance(value, Decimal):
                cell.number_format = "0.00"
            elif isinstance(value, date):
                cell.number_format = "yyyy-mm-dd"
            cells.append(cell)
        ws.append(cells)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def xlsx_response(sheet: Sheet, filename: str) -> HttpResponse:
    response = HttpResponse(xlsx_bytes(sheet), content_type=XLSX_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}.xlsx"'
    return response


def respond(sheet: Sheet, filename: str, fmt: str) -> HttpResponse:
    if fmt == "csv":
        return csv_response(sheet, filename)
    return xlsx_response(sheet, filename)


# ---------------------------------------------------------------------------- savings


def _saving_header(first: str) -> list[str]:
    return [first, _("记录数"), _("部位数"), _("节省（元）"), _("节省（万元）")]


def savings_sheets(data: Savings) -> dict[str, Sheet]:
    township_header = [_("乡镇")] + [_("%(kind)s 节省（元）") % {"kind": k} for k in data.kinds]
    township_header += [_("记录数"), _("节省（元）"), _("节省（万元）")]
    township_rows = [
        [t.facility.short_name]
        + [t.by_kind.get(k, Decimal("0.00")) for k in data.kinds]
        + [t.entries, t.saving, t.saving_wan]
        for t in data.by_township
    ]
    total = data.total
    township_rows.append(
        [total.label]
        + [sum((t.by_kind.get(k, Decimal("0.00")) for t in data.by_township), Decimal("0.00")) for k in data.kinds]
        + [total.entries, total.saving, total.saving_wan]
    )

    def plain(title: str, first: str, rows: list[Any]) -> Sheet:
        body = [[r.label, r.entries, r.body_parts, r.saving, r.saving_wan] for r in rows]
        body.append([total.label, total.entries, total.body_parts, total.saving, total.saving_wan])
        return Sheet(title, _saving_header(first), body)

    return {
        "township": Sheet(_("按乡镇"), township_header, township_rows),
        "kind": plain(_("按检查类型"), _("检查类型"), data.by_kind),
        "year": plain(_("按年"), _("年份"), data.by_year),
        "month": plain(_("按月"), _("月份"), data.by_month),
    }


def entries_sheet(entries: QuerySet[LedgerEntry]) -> Sheet:
    header = [
        _("记录号"),
        _("检查编号"),
        _("检查日期"),
        _("乡镇"),
        _("检查类型"),
        _("部位数"),
        _("价格标准"),
        _("县级单价（元）"),
        _("乡镇单价（元）"),
        _("节省（元）"),
        _("节省（万元）"),
        _("冲正记录号"),
        _("冲正原因"),
        _("记账时间"),
    ]
    rows = (
        [
            e.pk,
            str(e.consult.uuid),
            e.exam_date,
            e.facility.short_name,
            e.exam_kind,
            e.body_parts,
            e.schedule.code,
            e.county_price,
            e.township_price,
            e.saving,
            wan(e.saving),
            e.reverses_id or "",
            e.reason,
            e.recorded_at.isoformat(timespec="seconds"),
        ]
        for e in entries.select_related("consult", "facility", "schedule").order_by("exam_date", "pk").iterator(2000)
    )
    return Sheet(_("节省台账"), header, rows)


# ---------------------------------------------------------------------------- volume


def volume_sheet(table: VolumeTable) -> Sheet:
    header = [_("乡镇")] + [str(y) for y in table.years] + [_("合计")]
    rows: list[list[Any]] = [[r.facility.short_name, *r.counts, r.total] for r in table.rows]
    rows.append([_("合计"), *table.year_totals, table.total])
    return Sheet(_("%(kind)s 检查量") % {"kind": table.label}, header, rows)


# ---------------------------------------------------------------------------- turnaround


def _summary_header(prefix: str) -> list[str]:
    return [
        _("%(m)s 均值") % {"m": prefix},
        _("%(m)s 标准差") % {"m": prefix},
        _("%(m)s 中位数") % {"m": prefix},
        _("%(m)s 下四分位数") % {"m": prefix},
        _("%(m)s 上四分位数") % {"m": prefix},
    ]


def _summary_cells(s: Summary) -> list[Any]:
    return [s.mean, s.sd, s.median, s.q1, s.q3]


def turnaround_sheet(data: Turnaround, group: str) -> Sheet:
    rows_by_group = {
        "township": (_("乡镇"), data.by_township),
        "radiologist": (_("诊断医师"), data.by_radiologist),
        "kind": (_("检查类型"), data.by_kind),
        "period": (_("时段"), data.by_period),
    }
    first, rows = rows_by_group[group]
    header = [first, _("会诊数"), *_summary_header(_("会诊时间（分钟）")), _("时限内"), _("时限内比例（%）")]
    for _key, label, _a, _b in STAGES:
        header += _summary_header(str(label))
    body = []
    for r in [*rows, data.total]:
        share = None if r.share_within_limit is None else r.share_within_limit * 100
        line = [r.label, r.n, *_summary_cells(r.consult), r.within_limit, share]
        for _label, s in r.stage_list:
            line += _summary_cells(s)
        body.append(line)
    return Sheet(first, header, body)
