"""The volume page (exams per township and year) and its exports."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.utils.html import escape
from django.utils.safestring import mark_safe

from billing import dashboards, exports, formatting
from billing.views.common import (
    ALL_ROLES,
    download,
    exams_href,
    linked,
    place,
    render_page,
    scope_of,
)
from facilities.access import (
    role_required,
)
from facilities.models import ExamKind


def count_cell(n: int, href: str) -> str:
    """A count linked to its exams; "-" for none."""
    return f'<td class="num">{linked(formatting.number(n), href) if n else "-"}</td>'


@role_required(*ALL_ROLES)
def volume(request: HttpRequest) -> HttpResponse:
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, "billing/dashboards/volume.html", scope, {})
    tables = dashboards.volume(scope.filters)
    laid_out = []
    for number, table in enumerate(tables, start=1):
        rows = []
        for r in table.rows:
            cell = {"township": str(r.facility.uuid), "modality": table.kind}
            cells = [
                count_cell(n, exams_href(scope, "all", {**cell, "year": str(y)}))
                for n, y in zip(r.counts, table.years, strict=True)
            ]
            cells.append(count_cell(r.total, exams_href(scope, "all", cell)))
            rows.append(
                mark_safe(  # noqa: S308 -- the label is escaped, the cells are numbers and escaped links
                    f'<tr><th scope="row">{escape(place(r.facility))}</th>{"".join(cells)}</tr>'
                )
            )
        totals = [
            (n, exams_href(scope, "all", {"modality": table.kind, "year": str(y)}))
            for n, y in zip(table.year_totals, table.years, strict=True)
        ]
        partial = dashboards.partial_periods([str(y) for y in table.years], scope.filters)
        laid_out.append(
            {
                "number": number,
                "table": table,
                "years": [(y, partial.get(str(y))) for y in table.years],
                "rows": rows,
                "totals": totals,
                "total": (table.total, exams_href(scope, "all", {"modality": table.kind})),
            }
        )
    return render_page(request, "billing/dashboards/volume.html", scope, {"tables": laid_out})


@role_required(*ALL_ROLES)
def volume_export(request: HttpRequest, kind: str, fmt: str) -> HttpResponseBase:
    if kind not in ExamKind.values or fmt not in exports.FORMATS:
        raise Http404
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, "billing/dashboards/volume.html", scope, {})
    tables = {t.kind: t for t in dashboards.volume(scope.filters)}
    if kind not in tables:
        raise Http404
    return download(request, scope, exports.volume_sheet(tables[kind]), f"volume-{kind}", fmt)
