"""What every dashboard view shares: the roles, the filters as a scope, links to the exams
behind a number, audited downloads and rendering with the filter form."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import urlencode
from django.utils.translation import get_language

from billing import dashboards, exports, formatting
from billing.dashboards import Filters
from billing.forms import FilterForm
from facilities.access import (
    ADMINISTRATOR,
    RADIOLOGIST,
    TECHNOLOGIST,
    confined_to,
    figure_townships,
    has_role,
)
from facilities.models import Facility
from facilities.services import audit


class CountedPaginator(Paginator):
    """A paginator told its count (when known elsewhere) instead of counting the rows."""

    def __init__(self, object_list: Any, per_page: int, *, count: int | None) -> None:
        super().__init__(object_list, per_page)
        if count is not None:
            self.__dict__["count"] = count  # Paginator.count is a cached_property


MONEY_ROLES = (ADMINISTRATOR, TECHNOLOGIST)
ALL_ROLES = (ADMINISTRATOR, TECHNOLOGIST, RADIOLOGIST)
PAGE_SIZE = 50


@dataclass
class Scope:
    form: FilterForm
    filters: Filters | None  # None when the form has errors

    @cached_property
    def query(self) -> dict[str, str]:
        """The page's filters as GET parameters, for links and exports."""
        if self.filters is None:
            return {}
        f = self.filters
        params = {
            "date_from": f.date_from.isoformat() if f.date_from else "",
            "date_to": f.date_to.isoformat() if f.date_to else "",
            "township": str(f.facility.uuid) if f.facility else "",
            "modality": f.kind or "",
            "radiologist": str(f.radiologist.uuid) if f.radiologist else "",
        }
        return {k: v for k, v in params.items() if v}

    @cached_property
    def exams_url(self) -> str:
        return reverse("billing:dashboards:exams")


def scope_of(request: HttpRequest, form_class: type[FilterForm] = FilterForm) -> Scope:
    user: Any = request.user
    townships = figure_townships(user)
    own = confined_to(user)
    form = form_class(request.GET or None, townships=townships)
    if request.GET and not form.is_valid():
        if own is not None and "township" in form.errors:
            # Another township's figures, or one that does not exist (the form offers
            # a confined user their own only): neither is theirs.
            raise Http404
        return Scope(form, None)
    data = form.cleaned_data if request.GET else {}
    facility = data.get("township")
    if own is not None:
        # Theirs, whatever the form said; a technologist always belongs to a facility.
        facility = Facility.objects.filter(pk=own).first()
        if facility is None:
            raise Http404
    filters = Filters(
        date_from=data.get("date_from"),
        date_to=data.get("date_to"),
        facility=facility,
        kind=data.get("modality") or None,
        radiologist=data.get("radiologist"),
    )
    return Scope(form, filters)


def linked(value: str, href: str) -> str:
    """A table cell's figure linked to the exams behind it; "-" (no figure) unlinked. The
    large tables build their rows with this (a province's have 1,100 rows: a template
    include and a filter a cell cost more than the figures)."""
    return value if value == formatting.NONE else f'<a href="{escape(href)}">{value}</a>'


def place(facility: Facility) -> str:
    return formatting.place_name(facility, get_language() or "")


def mark_partial(rows: list[Any], filters: Filters) -> None:
    """Set `partial` on the rows of periods the page covers only in part."""
    partial = dashboards.partial_periods([r.key for r in rows], filters)
    for row in rows:
        row.partial = partial.get(row.key)


def exams_href(scope: Scope, basis: str, drill: dict[str, str]) -> str:
    # A province's volume page links eleven thousand cells: the URL is reversed once.
    return scope.exams_url + "?" + urlencode({**scope.query, **drill, "basis": basis})


def download(request: HttpRequest, scope: Scope, sheet: exports.Sheet, name: str, fmt: str) -> HttpResponseBase:
    """An export, audited: who took which table, in which format, under which filters."""
    audit(
        "billing.export.downloaded",
        request=request,
        object_type="billing.export",
        object_id=name,
        facility=scope.filters.facility if scope.filters else None,
        table=name,
        format=fmt,
        filters=scope.query,
    )
    return exports.respond(sheet, name, fmt)


def render_page(request: HttpRequest, template: str, scope: Scope, context: dict[str, Any]) -> HttpResponse:
    context = {
        "form": scope.form,
        "query": urlencode(scope.query),
        "shows_money": has_role(request.user, *MONEY_ROLES),
        "shows_reports": has_role(request.user, ADMINISTRATOR),
        **context,
    }
    return render(request, template, context, status=400 if scope.filters is None else 200)
