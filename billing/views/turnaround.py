"""The turnaround page and its exports."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from billing import dashboards, exports
from billing.forms import TurnaroundForm
from billing.views.common import (
    ALL_ROLES,
    Scope,
    download,
    mark_partial,
    place,
    render_page,
    scope_of,
)
from consults.models import Priority
from consults.services import time_limit_table
from facilities.access import (
    role_required,
)


def row_html(r: dashboards.TurnaroundRow) -> SafeString:
    """A row of a turnaround table, built here rather than by a template include per row:
    a province's township table has 1,100 rows, and an include and a dozen variable
    lookups a row cost more than the figures (docs/benchmarks-dashboards.md)."""
    c = r.text
    href = escape(r.href)
    partial = ' class="partial"' if r.partial else ""
    return mark_safe(  # noqa: S308 -- every value is a number formatted here or escaped
        f'<tr><th scope="row"{partial}><a href="{href}">{escape(r.label)}</a></th>'
        f'<td class="num"><a href="{href}">{c["n"]}</a></td>'
        f'<td class="num mean"><a href="{href}">{c["mean"]}</a> ± {c["sd"]}</td>'
        f'<td class="num">{c["median"]}</td><td class="num share">{c["share"]}</td></tr>'
    )


def stages_html(r: dashboards.TurnaroundRow) -> SafeString:
    """A row of a table's stages (the same reason as row_html)."""
    partial = ' class="partial"' if r.partial else ""
    cells = "".join(
        f'<td class="num">{mean_sd}</td><td class="num">{median}</td>' for mean_sd, median in r.text["stages"]
    )
    return mark_safe(f'<tr><th scope="row"{partial}>{escape(r.label)}</th>{cells}</tr>')  # noqa: S308 -- as row_html


def period_of(scope: Scope) -> str:
    if not scope.form.is_bound:
        return "year"
    return scope.form.cleaned_data.get("period") or "year"


@role_required(*ALL_ROLES)
def turnaround(request: HttpRequest) -> HttpResponse:
    scope = scope_of(request, TurnaroundForm)
    if scope.filters is None:
        return render_page(request, "billing/dashboards/turnaround.html", scope, {})
    period = period_of(scope)
    data = dashboards.turnaround(scope.filters, period)
    exams_url = reverse("billing:dashboards:exams")
    for row in [data.total, *data.by_township, *data.by_radiologist, *data.by_kind, *data.by_period]:
        row.href = exams_url + "?" + urlencode({**scope.query, **row.drill, "basis": "signed"})
        row.text = row.cells()
    mark_partial(data.by_period, scope.filters)
    for row in data.by_township:
        if row.facility is not None:
            row.label = place(row.facility)
    for row in [data.total, *data.by_township, *data.by_radiologist, *data.by_kind, *data.by_period]:
        row.html = row_html(row)
        row.stages_html = stages_html(row)
    charts = {
        "figure2": {
            "title": str(_("各乡镇平均会诊时间（分钟）")),
            "categories": [r.label for r in data.figure2],
            "series": [{"name": str(_("平均会诊时间")), "data": [round(r.consult.mean or 0, 2) for r in data.figure2]}],
            "unit": str(_("分钟")),
            "axis": str(_("乡镇")),
        },
        "figure3": {
            "title": str(_("各诊断医师会诊量")),
            "categories": [r.label for r in data.figure3],
            "series": [{"name": str(_("会诊数")), "data": [r.n for r in data.figure3]}],
            "unit": str(_("例")),
            "axis": str(_("诊断医师")),
        },
        "histogram": {
            "title": str(_("会诊时间分布")),
            "categories": [label for label, _n in data.histogram],
            "series": [{"name": str(_("会诊数")), "data": [n for _label, n in data.histogram]}],
            "unit": str(_("例")),
            "axis": str(_("会诊时间（分钟）")),
        },
    }
    groups = [
        ("township", _("按乡镇"), data.by_township),
        ("radiologist", _("按诊断医师"), data.by_radiologist),
        ("kind", _("按检查类型"), data.by_kind),
        ("period", _("按时段"), data.by_period),
    ]
    table = time_limit_table()
    return render_page(
        request,
        "billing/dashboards/turnaround.html",
        scope,
        {
            "data": data,
            "groups": groups,
            "charts": charts,
            "stages": [str(label) for _k, label, _a, _b in dashboards.STAGES],
            # The configured table each consult's limit was taken from when it arrived.
            "limits": [(label, table[value]) for value, label in Priority.choices[::-1]],
            "period_query": urlencode({**scope.query, "period": period}),
            "partial_rows": [r for r in data.by_period if r.partial],
        },
    )


TURNAROUND_TABLES = ("township", "radiologist", "kind", "period")


@role_required(*ALL_ROLES)
def turnaround_export(request: HttpRequest, table: str, fmt: str) -> HttpResponseBase:
    if table not in TURNAROUND_TABLES or fmt not in exports.FORMATS:
        raise Http404
    scope = scope_of(request, TurnaroundForm)
    if scope.filters is None:
        return render_page(request, "billing/dashboards/turnaround.html", scope, {})
    data = dashboards.turnaround(scope.filters, period_of(scope))
    return download(request, scope, exports.turnaround_sheet(data, table), f"turnaround-{table}", fmt)
