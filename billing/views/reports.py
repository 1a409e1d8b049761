"""The administrators' reports: growth (year over year, month over month), the radiologists'
workload, the share signed within the time limit; each with its exports. Their figures are
billing.reports' functions (growth, workload, within_limit), which the monthly PDF calls too."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from billing import dashboards, exports, formatting
from billing.forms import WorkloadForm
from billing.views.common import Scope, download, exams_href, render_page, scope_of
from consults.models import Priority
from consults.services import time_limit_table
from facilities.access import ADMINISTRATOR, role_required
from facilities.models import ExamKind

GROWTH = "billing/dashboards/growth.html"
WORKLOAD = "billing/dashboards/workload.html"
TIMELINESS = "billing/dashboards/timeliness.html"


# ---------------------------------------------------------------------------- growth


def _growth_chart(rows: list[dashboards.GrowthRow], title: str, unit: str) -> dict[str, Any]:
    return {
        "title": title,
        "categories": [r.key + ("*" if r.partial else "") for r in rows],
        "series": [{"name": title, "data": [float(r.value) for r in rows]}],
        "unit": unit,
        "axis": str(_("年份")),
    }


@role_required(ADMINISTRATOR)
def growth(request: HttpRequest) -> HttpResponse:
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, GROWTH, scope, {})
    data = dashboards.growth(scope.filters)
    tables = [
        ("exams-year", _("检查量：按年"), _("年份"), data.exams_by_year, False),
        ("exams-month", _("检查量：按月"), _("月份"), data.exams_by_month, False),
        ("savings-year", _("节省费用（元）：按年"), _("年份"), data.savings_by_year, True),
        ("savings-month", _("节省费用（元）：按月"), _("月份"), data.savings_by_month, True),
    ]
    charts = {
        "exams": _growth_chart(data.exams_by_year, str(_("检查量")), str(_("例"))),
        "savings": _growth_chart(data.savings_by_year, str(_("节省费用（元）")), str(_("元"))),
    }
    partial = [r for r in [*data.exams_by_year, *data.exams_by_month] if r.partial]
    return render_page(
        request,
        GROWTH,
        scope,
        {"data": data, "tables": tables, "charts": charts, "partial_rows": partial},
    )


GROWTH_TABLES = ("exams-year", "exams-month", "savings-year", "savings-month")


@role_required(ADMINISTRATOR)
def growth_export(request: HttpRequest, table: str, fmt: str) -> HttpResponseBase:
    if table not in GROWTH_TABLES or fmt not in exports.FORMATS:
        raise Http404
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, GROWTH, scope, {})
    data = dashboards.growth(scope.filters)
    rows = {
        "exams-year": data.exams_by_year,
        "exams-month": data.exams_by_month,
        "savings-year": data.savings_by_year,
        "savings-month": data.savings_by_month,
    }[table]
    sheet = exports.growth_sheet(rows, money=table.startswith("savings"), by_month=table.endswith("month"))
    return download(request, scope, sheet, f"growth-{table}", fmt)


# ---------------------------------------------------------------------------- workload


@role_required(ADMINISTRATOR)
def workload(request: HttpRequest) -> HttpResponse:
    scope = scope_of(request, WorkloadForm)
    if scope.filters is None:
        return render_page(request, WORKLOAD, scope, {"night": dashboards.night_label()})
    data = dashboards.workload(scope.filters)
    people: list[dict[str, Any]] = [
        {
            "name": str(line.radiologist),
            "href": exams_href(scope, "signed", {"radiologist": str(line.radiologist.uuid)}),
            "work": line.total,
        }
        for line in data.radiologists
    ]
    partial_rows = _partial_months(data, scope)
    partial_keys = {r.label for r in partial_rows}
    month_rows = [
        month_row(
            month,
            [line.months.get(month) for line in data.radiologists],
            data.by_month[month],
            exams_href(scope, "signed", {"month": month}),
            partial=month in partial_keys,
        )
        for month in data.months
    ]
    chart = {
        "title": str(_("各医师签发报告数")),
        "categories": [p["name"] for p in people],
        "series": [
            {"name": str(_("工作日白天")), "data": [line.total.weekday_day for line in data.radiologists]},
            {"name": str(_("工作日夜间")), "data": [line.total.weekday_night for line in data.radiologists]},
            {"name": str(_("周末")), "data": [line.total.weekend for line in data.radiologists]},
        ],
        "unit": str(_("例")),
        "axis": str(_("诊断医师")),
    }
    return render_page(
        request,
        WORKLOAD,
        scope,
        {
            "data": data,
            "night": data.night,
            "people": people,
            "month_rows": month_rows,
            "chart": chart,
            "partial_rows": partial_rows,
        },
    )


def month_row(
    month: str, cells: list[dashboards.Work | None], total: dashboards.Work, href: str, *, partial: bool
) -> SafeString:
    """A month of the workload table, built here (views.common.linked says why): each
    radiologist's reports with their nights and weekends, then the month's totals."""
    marked = ' class="partial"' if partial else ""
    parts = [f'<tr><th scope="row"{marked}><a href="{escape(href)}">{escape(month)}</a></th>']
    for w in cells:
        cell = formatting.NONE
        if w is not None:
            cell = formatting.number(w.signed)
            if w.weekday_night or w.weekend:
                night, weekend = formatting.number(w.weekday_night), formatting.number(w.weekend)
                cell += f' <span class="aside">({night}/{weekend})</span>'
        parts.append(f'<td class="num">{cell}</td>')
    within = "" if total.within_percent is None else f"{formatting.number(total.within_percent, 1)} %"
    parts += [
        f'<td class="num">{formatting.number(total.signed)}</td>',
        f'<td class="num">{formatting.number(total.weekday_night)}</td>',
        f'<td class="num">{formatting.number(total.weekend)}</td>',
        f'<td class="num">{formatting.number(total.mean_minutes, 1)}</td>',
        f'<td class="num">{within}</td></tr>',
    ]
    return mark_safe("".join(parts))  # noqa: S308 -- the month and link are escaped, the cells are numbers


def _partial_months(data: dashboards.Workload, scope: Scope) -> list[SimpleNamespace]:
    """The months the page covers only in part, as the partial-period note reads them."""
    assert scope.filters is not None
    partial = dashboards.partial_periods(data.months, scope.filters)
    return [SimpleNamespace(label=k, partial=partial[k]) for k in data.months if k in partial]


WORKLOAD_TABLES = ("radiologists", "months")


@role_required(ADMINISTRATOR)
def workload_export(request: HttpRequest, table: str, fmt: str) -> HttpResponseBase:
    if table not in WORKLOAD_TABLES or fmt not in exports.FORMATS:
        raise Http404
    scope = scope_of(request, WorkloadForm)
    if scope.filters is None:
        return render_page(request, WORKLOAD, scope, {})
    sheet = exports.workload_sheet(dashboards.workload(scope.filters), table)
    return download(request, scope, sheet, f"workload-{table}", fmt)


# ---------------------------------------------------------------------------- time limits


def _limits_text(priority: str, kind: str) -> str:
    """The configured limit of a priority and kind, in minutes (head CT's beside CT's)."""
    row = time_limit_table()[priority]
    if kind == ExamKind.CT and row.get("CT_HEAD") not in (None, row.get("CT")):
        return str(_("%(ct)s（头颅 %(head)s）")) % {"ct": row["CT"], "head": row["CT_HEAD"]}
    return str(row.get(kind, "-"))


def _share(cell: dashboards.LimitCell | None) -> float:
    share = None if cell is None else cell.within_percent
    return 0.0 if share is None else round(share, 1)


@role_required(ADMINISTRATOR)
def timeliness(request: HttpRequest) -> HttpResponse:
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, TIMELINESS, scope, {})
    data = dashboards.within_limit(scope.filters)
    labels = dict(Priority.choices)
    rows = []
    for priority in data.priorities:
        for kind in data.kinds:
            cell = data.cells.get((priority, kind))
            if cell is None:
                continue
            rows.append(
                {
                    "priority": labels[priority],
                    "kind": kind,
                    "limit": _limits_text(priority, kind),
                    "cell": cell,
                }
            )
    chart = {
        "title": str(_("时限内签发比例（%）")),
        "categories": [str(labels[p]) for p in data.priorities],
        "series": [
            {
                "name": kind,
                "data": [
                    round(c.within_percent, 1)
                    if (c := data.cells.get((p, kind))) and c.within_percent is not None
                    else 0
                    for p in data.priorities
                ],
            }
            for kind in data.kinds
        ],
        "unit": "%",
        # As the table prints a share: 98.6 %, 100.0 %.
        "places": 1,
        "axis": str(_("优先级")),
    }
    by_priority = [(labels[p], data.by_priority[p]) for p in data.priorities]
    by_kind = [(k, data.by_kind[k]) for k in data.kinds]
    return render_page(
        request,
        TIMELINESS,
        scope,
        {"data": data, "rows": rows, "by_priority": by_priority, "by_kind": by_kind, "chart": chart},
    )


@role_required(ADMINISTRATOR)
def timeliness_export(request: HttpRequest, table: str, fmt: str) -> HttpResponseBase:
    if table != "priority-kind" or fmt not in exports.FORMATS:
        raise Http404
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, TIMELINESS, scope, {})
    sheet = exports.within_limit_sheet(dashboards.within_limit(scope.filters))
    return download(request, scope, sheet, "timeliness", fmt)
