"""Exports of the dashboards' tables and of the ledger entries, as CSV and XLSX.

A sheet is built from the same dataclasses the pages render, so an exported number is the
number on the page. CSV is UTF-8 with a byte-order mark, which Excel needs to read Chinese;
XLSX keeps numbers as numbers (money as Decimal, shown with two decimals)."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

from django.db.models import QuerySet
from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import get_language, pgettext
from django.utils.translation import gettext as _
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from billing.dashboards import (
    STAGES,
    GrowthRow,
    Savings,
    Summary,
    Travel,
    Turnaround,
    VolumeTable,
    WithinLimit,
    Workload,
)
from billing.formatting import place_name
from billing.models import LedgerEntry
from consults.models import Priority
from facilities.models import Facility


def _place(facility: Facility) -> str:
    return place_name(facility, get_language() or "")


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


def csv_response(sheet: Sheet, filename: str) -> StreamingHttpResponse:
    """Streamed, a line at a time: the ledger's every entry is megabytes, and the first
    line leaves at once instead of after the last row is built."""
    response = StreamingHttpResponse(_csv_lines(sheet), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def xlsx_file(sheet: Sheet) -> IO[bytes]:
    """The workbook written to a temporary file (openpyxl's write-only mode writes rows as
    they come), to be streamed from it."""
    book = Workbook(write_only=True)
    ws = book.create_sheet(title=sheet.title[:31])
    ws.append(sheet.header)
    for row in sheet.rows:
        cells = []
        for value in row:
            cell = WriteOnlyCell(ws, value=round(value, 2) if isinstance(value, float) else value)
            if isinstance(value, Decimal):
                cell.number_format = "#,##0.00"
            elif isinstance(value, datetime):
                cell.number_format = "yyyy-mm-dd hh:mm:ss"
            elif isinstance(value, date):
                cell.number_format = "yyyy-mm-dd"
            cells.append(cell)
        ws.append(cells)
    out = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by the FileResponse that streams it
    book.save(out)
    out.seek(0)
    return out


def xlsx_bytes(sheet: Sheet) -> bytes:
    with xlsx_file(sheet) as out:
        return out.read()


def xlsx_response(sheet: Sheet, filename: str) -> FileResponse:
    return FileResponse(xlsx_file(sheet), as_attachment=True, filename=f"{filename}.xlsx", content_type=XLSX_TYPE)


def respond(sheet: Sheet, filename: str, fmt: str) -> StreamingHttpResponse | FileResponse:
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
        [_place(t.facility)] + [t.by_kind.get(k) for k in data.kinds] + [t.entries, t.saving, t.saving_wan]
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
    """Every entry, reversals included. Money in yuan only: an entry's saving is tens of
    yuan, which in 万元 rounds to 0.00. The time of recording is local (TIME_ZONE), as
    the pages show times, without an offset Excel would not read."""
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
        _("冲正记录号"),
        _("冲正原因"),
        _("记账时间"),
    ]
    places = {f.pk: _place(f) for f in Facility.objects.filter(pk__in=entries.values("facility_id"))}
    fields = (
        "pk",
        "consult__uuid",
        "exam_date",
        "facility_id",
        "exam_kind",
        "body_parts",
        "schedule__code",
        "county_price",
        "township_price",
        "saving",
        "reverses_id",
        "reason",
        "recorded_at",
    )
    zone = timezone.get_current_timezone()

    def rows() -> Iterator[list[Any]]:
        # Tuples, not model instances: a county's 62 thousand entries built as objects
        # with their consult, township and edition took most of the export's time.
        for pk, uuid, day, facility, kind, parts, code, county, township, saving, reverses, reason, at in (
            entries.order_by("exam_date", "pk").values_list(*fields).iterator(2000)
        ):
            local = at.astimezone(zone).replace(tzinfo=None)
            yield [
                pk,
                str(uuid),
                day,
                places[facility],
                kind,
                parts,
                code,
                county,
                township,
                saving,
                reverses or "",
                reason,
                local.replace(microsecond=0),
            ]

    return Sheet(_("节省台账"), header, rows())


# ---------------------------------------------------------------------------- volume


def volume_sheet(table: VolumeTable) -> Sheet:
    header = [_("乡镇")] + [str(y) for y in table.years] + [_("合计")]
    rows: list[list[Any]] = [[_place(r.facility), *r.counts, r.total] for r in table.rows]
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


# ---------------------------------------------------------------------------- the administrators' reports


def growth_sheet(rows: list[GrowthRow], *, money: bool, by_month: bool) -> Sheet:
    """A growth table: each period, the same period a year before, the period before (for
    months), and the growth over each in per cent (empty where the base is 0 or missing)."""
    value = _("节省（元）") if money else _("检查量")
    header = [_("月份") if by_month else _("年份"), value, _("上年同期"), _("同比增长（%）")]
    if by_month:
        header += [_("上月"), _("环比增长（%）")]
    body = []
    for r in rows:
        line: list[Any] = [r.key + ("*" if r.partial else ""), r.value, r.year_before, r.year_over_year]
        if by_month:
            line += [r.period_before, r.period_over_period]
        body.append(line)
    return Sheet(value, header, body)


def _work_cells(w: Any) -> list[Any]:
    return [w.signed, w.weekday_day, w.weekday_night, w.weekend, w.mean_minutes, w.within_limit, w.within_percent]


def _work_header() -> list[str]:
    return [
        pgettext("count", "签发报告"),
        _("工作日白天"),
        _("工作日夜间"),
        _("周末"),
        _("平均会诊时间（分钟）"),
        _("时限内"),
        _("时限内比例（%）"),
    ]


def workload_sheet(data: Workload, table: str) -> Sheet:
    """ "radiologists": each radiologist's totals; "months": one line per radiologist and month."""
    if table == "radiologists":
        body = [[str(line.radiologist), *_work_cells(line.total)] for line in data.radiologists]
        body.append([_("合计"), *_work_cells(data.total)])
        return Sheet(_("医师工作量"), [_("诊断医师"), *_work_header()], body)
    body = [
        [str(line.radiologist), month, *_work_cells(line.months[month])]
        for line in data.radiologists
        for month in data.months
        if month in line.months
    ]
    return Sheet(_("医师工作量（按月）"), [_("诊断医师"), _("月份"), *_work_header()], body)


def within_limit_sheet(data: WithinLimit) -> Sheet:
    labels = dict(Priority.choices)
    header = [
        _("优先级"),
        _("检查类型"),
        _("会诊数"),
        _("已签发"),
        _("时限内签发"),
        _("超时签发"),
        _("时限内比例（%）"),
        _("未签发且已超时"),
    ]

    def cells(c: Any) -> list[Any]:
        return [c.consults, c.signed, c.within_limit, c.late, c.within_percent, c.open_overdue]

    body = [
        [str(labels[p]), k, *cells(data.cells[(p, k)])]
        for p in data.priorities
        for k in data.kinds
        if (p, k) in data.cells
    ]
    body.append([_("合计"), "", *cells(data.total)])
    return Sheet(_("时限达标"), header, body)


def travel_sheet(data: Travel) -> Sheet:
    header = [
        _("乡镇"),
        _("检查数"),
        _("患者数"),
        _("节省（元）"),
        _("每例节省（元）"),
        _("每名患者节省（元）"),
        _("距县医院（公里）"),
        _("往返路费（元）"),
        _("往返路上时间（分钟）"),
        _("免去的路费（元）"),
        _("免去的路程（公里）"),
        _("免去的路上时间（小时）"),
        _("路程数据来源"),
    ]
    body: list[list[Any]] = []
    for t in data.townships:
        f = t.facility
        body.append(
            [
                _place(f),
                t.exams,
                t.patients,
                t.saving,
                t.saving_per_exam,
                t.saving_per_patient,
                f.county_distance_km,
                f.round_trip_cost,
                f.round_trip_minutes,
                t.travel_cost,
                t.travel_km,
                t.travel_hours,
                f.travel_source,
            ]
        )
    body.append(
        [
            _("合计"),
            data.exams,
            data.patients,
            data.saving,
            data.saving_per_exam,
            data.saving_per_patient,
            None,
            None,
            None,
            data.travel_cost,
            data.travel_km,
            data.travel_hours,
            "",
        ]
    )
    return Sheet(_("患者路程"), header, body)
