"""The savings page and its exports."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.utils.html import escape, urlize
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from billing import dashboards, exports, formatting
from billing.views.common import (
    MONEY_ROLES,
    Scope,
    download,
    exams_href,
    linked,
    mark_partial,
    place,
    render_page,
    scope_of,
)
from facilities.access import (
    role_required,
)
from facilities.models import Facility


def township_row(scope: Scope, t: dashboards.TownshipSaving, kinds: list[str]) -> SafeString:
    """A row of the table by township, built here (views.common.linked says why). A kind
    the township has no entry of (a DR-only township's CT) shows "-", not a linked 0.00."""
    href = exams_href(scope, "ledger", {"township": str(t.facility.uuid)})
    by_kind = "".join(
        '<td class="num">'
        + linked(
            formatting.yuan(t.by_kind.get(k)),
            exams_href(scope, "ledger", {"township": str(t.facility.uuid), "modality": k}),
        )
        + "</td>"
        for k in kinds
    )
    return mark_safe(  # noqa: S308 -- the label is escaped, the cells are numbers and escaped links
        f'<tr><th scope="row">{linked(escape(place(t.facility)), href)}</th>{by_kind}'
        f'<td class="num">{linked(formatting.number(t.entries), href)}</td>'
        f'<td class="num">{linked(formatting.yuan(t.saving), href)}</td>'
        f'<td class="num">{linked(formatting.wan(t.saving), href)}</td></tr>'
    )


@role_required(*MONEY_ROLES)
def savings(request: HttpRequest) -> HttpResponse:
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, "billing/dashboards/savings.html", scope, {})
    data = dashboards.savings(scope.filters)
    for row in [data.total, *data.by_kind, *data.by_year, *data.by_month]:
        row.href = exams_href(scope, "ledger", row.drill)
    mark_partial(data.by_year, scope.filters)
    mark_partial(data.by_month, scope.filters)
    townships = [township_row(scope, t, data.kinds) for t in data.by_township]
    kind_totals = [
        (sum((t.by_kind.get(k, dashboards.ZERO) for t in data.by_township), dashboards.ZERO), k) for k in data.kinds
    ]
    figure1 = {
        "title": str(_("各乡镇节省费用（元）")),
        "categories": [place(t.facility) for t in data.by_township],
        "series": [
            {"name": k, "data": [float(t.by_kind.get(k, dashboards.ZERO)) for t in data.by_township]}
            for k in data.kinds
        ],
        "unit": str(_("元")),
        "axis": str(_("乡镇")),
    }
    return render_page(
        request,
        "billing/dashboards/savings.html",
        scope,
        {
            "data": data,
            "townships": townships,
            "kind_totals": kind_totals,
            "figure1": figure1,
            "editions": dashboards.editions(scope.filters),
            "unconfirmed": dashboards.unconfirmed_parts(scope.filters),
            "partial_rows": [r for r in data.by_year if r.partial],
            "partial_months": [r for r in data.by_month if r.partial],
        },
    )


@role_required(*MONEY_ROLES)
def travel(request: HttpRequest) -> HttpResponse:
    """What each exam read from a township saved its patient: the price difference per exam
    and per patient, beside the journey to the county hospital not made."""
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, "billing/dashboards/travel.html", scope, {})
    data = dashboards.travel(scope.filters)
    return render_page(
        request,
        "billing/dashboards/travel.html",
        scope,
        {
            "travel": data,
            "travel_rows": [travel_row(t) for t in data.townships],
            "travel_sources": [travel_source(t.facility) for t in data.townships],
        },
    )


def travel_row(t: dashboards.TownshipTravel) -> SafeString:
    """A row of the patients' savings by township, built here as the savings table's rows
    are (a province has 1,100): the same cells the template's filters gave."""
    f = t.facility
    trip = formatting.NONE
    if t.known:
        trip = escape(
            _("%(cost)s 元 · %(minutes)s 分钟")
            % {"cost": formatting.yuan(f.round_trip_cost), "minutes": formatting.number(f.round_trip_minutes)}
        )
    cells = (
        formatting.number(t.exams),
        formatting.number(t.patients),
        formatting.yuan(t.saving),
        formatting.yuan(t.saving_per_exam),
        formatting.yuan(t.saving_per_patient),
        formatting.number(f.county_distance_km, 1),
        trip,
        formatting.yuan(t.travel_cost),
        formatting.number(t.travel_hours),
    )
    return mark_safe(  # noqa: S308 -- the label is escaped, the cells are numbers and escaped text
        f'<tr><th scope="row">{escape(place(f))}</th>'
        + "".join(f'<td class="num">{cell}</td>' for cell in cells)
        + "</tr>"
    )


def travel_source(facility: Facility) -> SafeString:
    """Where a township's distance, fare and time come from, its addresses as links."""
    return mark_safe(  # noqa: S308 -- urlize escapes the text
        f"{escape(place(facility))}：{urlize(facility.travel_source or str(_('未填写')), autoescape=True)}"
    )


SAVINGS_TABLES = ("township", "kind", "year", "month", "travel", "entries")


@role_required(*MONEY_ROLES)
def savings_export(request: HttpRequest, table: str, fmt: str) -> HttpResponseBase:
    if table not in SAVINGS_TABLES or fmt not in exports.FORMATS:
        raise Http404
    scope = scope_of(request)
    if scope.filters is None:
        return render_page(request, "billing/dashboards/savings.html", scope, {})
    if table == "entries":
        sheet = exports.entries_sheet(dashboards.ledger_entries(scope.filters))
    elif table == "travel":
        sheet = exports.travel_sheet(dashboards.travel(scope.filters))
    else:
        sheet = exports.savings_sheets(dashboards.savings(scope.filters))[table]
    return download(request, scope, sheet, f"savings-{table}", fmt)
