"""The dashboard pages: savings, turnaround and volume, their exports, and the list of the
exams behind any number on them.

Who sees what (documented in docs/savings-ledger.md):
- administrators: every page, every township;
- a township's technologist: every page, their own township only. The township filter is
  forced to theirs; asking for another township is a 404, like any row outside one's scope;
- radiologists: turnaround and volume for every township (they read for all of them, and
  Figure 3 compares the reading team), the exam list behind those numbers; not the money.
Filters are GET parameters validated by a form: a bad value is a form error on the page
(status 400), never a 500."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, QuerySet, Subquery, Sum
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from billing import dashboards, exports, formatting
from billing.dashboards import Filters
from billing.models import LedgerEntry
from consults.models import Priority
from consults.services import time_limit_table
from facilities.access import (
    ADMINISTRATOR,
    CLINICAL_ROLES,
    RADIOLOGIST,
    TECHNOLOGIST,
    confined_to,
    figure_townships,
    has_role,
    role_required,
)
from facilities.models import ExamKind, Facility, User
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


def _date_input() -> forms.DateInput:
    """A text field that static/js/dashboards.js turns into a calendar in the page's
    language; typed by hand it takes YYYY-MM-DD, the one format it shows."""
    attrs = {"data-datepicker": "1", "placeholder": "YYYY-MM-DD", "autocomplete": "off", "inputmode": "numeric"}
    return forms.DateInput(format="%Y-%m-%d", attrs=attrs)


class FilterForm(forms.Form):
    date_from = forms.DateField(label=_("起始日期"), required=False, widget=_date_input())
    date_to = forms.DateField(label=_("截止日期"), required=False, widget=_date_input())
    township = forms.ModelChoiceField(
        label=_("乡镇"),
        queryset=Facility.objects.none(),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部乡镇"),
    )
    modality = forms.ChoiceField(label=_("检查类型"), required=False, choices=[("", _("全部类型")), *ExamKind.choices])

    def __init__(self, *args: Any, townships: QuerySet[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["township"]).queryset = townships

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError(_("起始日期不能晚于截止日期。"))
        return data


class TurnaroundForm(FilterForm):
    period = forms.ChoiceField(
        label=_("时段"),
        required=False,
        choices=[("year", _("按年")), ("quarter", _("按季度")), ("month", _("按月"))],
    )


class ExamListForm(FilterForm):
    radiologist = forms.ModelChoiceField(
        label=_("诊断医师"),
        queryset=User.objects.filter(role=User.Role.RADIOLOGIST),
        to_field_name="uuid",
        required=False,
        empty_label=_("全部医师"),
    )
    year = forms.IntegerField(label=_("年份"), required=False, min_value=1900, max_value=2999)
    quarter = forms.IntegerField(label=_("季度"), required=False, min_value=1, max_value=4)
    month = forms.RegexField(label=_("月份"), required=False, regex=r"^\d{4}-(0[1-9]|1[0-2])$")
    basis = forms.ChoiceField(
        label=_("范围"),
        required=False,
        choices=[("all", _("全部检查")), ("signed", _("已签发报告")), ("ledger", _("已记入节省台账"))],
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("quarter") and not data.get("year"):
            raise forms.ValidationError(_("选择季度时须同时选择年份。"))
        return data


@dataclass
class Scope:
    form: FilterForm
    filters: Filters | None  # None when the form has errors

    @property
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
        }
        return {k: v for k, v in params.items() if v}


def _scope(request: HttpRequest, form_class: type[FilterForm] = FilterForm) -> Scope:
    user: Any = request.user
    townships = figure_townships(user)
    own = confined_to(user)
    if own is not None:
        asked = request.GET.get("township", "")
        if asked and asked not in {str(uuid) for uuid in townships.values_list("uuid", flat=True)}:
            # Another township's figures, or one that does not exist: neither is theirs.
            raise Http404
    form = form_class(request.GET or None, townships=townships)
    if request.GET and not form.is_valid():
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


def _place(facility: Facility) -> str:
    return formatting.place_name(facility, get_language() or "")


def _mark_partial(rows: list[Any], filters: Filters) -> None:
    """Set `partial` on the rows of periods the page covers only in part."""
    partial = dashboards.partial_periods([r.key for r in rows], filters)
    for row in rows:
        row.partial = partial.get(row.key)


def _exams_href(scope: Scope, basis: str, drill: dict[str, str]) -> str:
    return reverse("billing:dashboards:exams") + "?" + urlencode({**scope.query, **drill, "basis": basis})


def _download(request: HttpRequest, scope: Scope, sheet: exports.Sheet, name: str, fmt: str) -> HttpResponseBase:
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


def _render(request: HttpRequest, template: str, scope: Scope, context: dict[str, Any]) -> HttpResponse:
    context = {
        "form": scope.form,
        "query": urlencode(scope.query),
        "shows_money": has_role(request.user, *MONEY_ROLES),
        **context,
    }
    return render(request, template, context, status=400 if scope.filters is None else 200)


# ---------------------------------------------------------------------------- savings


@role_required(*MONEY_ROLES)
def savings(request: HttpRequest) -> HttpResponse:
    scope = _scope(request)
    if scope.filters is None:
        return _render(request, "billing/dashboards/savings.html", scope, {})
    data = dashboards.savings(scope.filters)
    for row in [data.total, *data.by_kind, *data.by_year, *data.by_month]:
        row.href = _exams_href(scope, "ledger", row.drill)
    _mark_partial(data.by_year, scope.filters)
    _mark_partial(data.by_month, scope.filters)
    townships = [
        {
            "label": _place(t.facility),
            "href": _exams_href(scope, "ledger", {"township": str(t.facility.uuid)}),
            # None where the township has no entry of the kind (a DR-only township's CT):
            # the page shows "-", not a linked 0.00.
            "by_kind": [
                (
                    t.by_kind.get(k),
                    _exams_href(scope, "ledger", {"township": str(t.facility.uuid), "modality": k}),
                )
                for k in data.kinds
            ],
            "entries": t.entries,
            "saving": t.saving,
        }
        for t in data.by_township
    ]
    kind_totals = [
        (sum((t.by_kind.get(k, dashboards.ZERO) for t in data.by_township), dashboards.ZERO), k) for k in data.kinds
    ]
    figure1 = {
        "title": str(_("各乡镇节省费用（元）")),
        "categories": [_place(t.facility) for t in data.by_township],
        "series": [
            {"name": k, "data": [float(t.by_kind.get(k, dashboards.ZERO)) for t in data.by_township]}
            for k in data.kinds
        ],
        "unit": str(_("元")),
        "axis": str(_("乡镇")),
    }
    return _render(
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


SAVINGS_TABLES = ("township", "kind", "year", "month", "entries")


@role_required(*MONEY_ROLES)
def savings_export(request: HttpRequest, table: str, fmt: str) -> HttpResponseBase:
    if table not in SAVINGS_TABLES or fmt not in exports.FORMATS:
        raise Http404
    scope = _scope(request)
    if scope.filters is None:
        return _render(request, "billing/dashboards/savings.html", scope, {})
    if table == "entries":
        sheet = exports.entries_sheet(dashboards.ledger_entries(scope.filters))
    else:
        sheet = exports.savings_sheets(dashboards.savings(scope.filters))[table]
    return _download(request, scope, sheet, f"savings-{table}", fmt)


# ---------------------------------------------------------------------------- turnaround


def _period(scope: Scope) -> str:
    if not scope.form.is_bound:
        return "year"
    return scope.form.cleaned_data.get("period") or "year"


@role_required(*ALL_ROLES)
def turnaround(request: HttpRequest) -> HttpResponse:
    scope = _scope(request, TurnaroundForm)
    if scope.filters is None:
        return _render(request, "billing/dashboards/turnaround.html", scope, {})
    period = _period(scope)
    data = dashboards.turnaround(scope.filters, period)
    exams_url = reverse("billing:dashboards:exams")
    for row in [data.total, *data.by_township, *data.by_radiologist, *data.by_kind, *data.by_period]:
        row.href = exams_url + "?" + urlencode({**scope.query, **row.drill, "basis": "signed"})
        row.text = row.cells()
    _mark_partial(data.by_period, scope.filters)
    for row in data.by_township:
        if row.facility is not None:
            row.label = _place(row.facility)
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
    return _render(
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
    scope = _scope(request, TurnaroundForm)
    if scope.filters is None:
        return _render(request, "billing/dashboards/turnaround.html", scope, {})
    data = dashboards.turnaround(scope.filters, _period(scope))
    return _download(request, scope, exports.turnaround_sheet(data, table), f"turnaround-{table}", fmt)


# ---------------------------------------------------------------------------- volume


@role_required(*ALL_ROLES)
def volume(request: HttpRequest) -> HttpResponse:
    scope = _scope(request)
    if scope.filters is None:
        return _render(request, "billing/dashboards/volume.html", scope, {})
    tables = dashboards.volume(scope.filters)
    laid_out = []
    for number, table in enumerate(tables, start=1):
        rows = []
        for r in table.rows:
            cell = {"township": str(r.facility.uuid), "modality": table.kind}
            rows.append(
                {
                    "label": _place(r.facility),
                    "cells": [
                        (n, _exams_href(scope, "all", {**cell, "year": str(y)}))
                        for n, y in zip(r.counts, table.years, strict=True)
                    ],
                    "total": (r.total, _exams_href(scope, "all", cell)),
                }
            )
        totals = [
            (n, _exams_href(scope, "all", {"modality": table.kind, "year": str(y)}))
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
                "total": (table.total, _exams_href(scope, "all", {"modality": table.kind})),
            }
        )
    return _render(request, "billing/dashboards/volume.html", scope, {"tables": laid_out})


@role_required(*ALL_ROLES)
def volume_export(request: HttpRequest, kind: str, fmt: str) -> HttpResponseBase:
    if kind not in ExamKind.values or fmt not in exports.FORMATS:
        raise Http404
    scope = _scope(request)
    if scope.filters is None:
        return _render(request, "billing/dashboards/volume.html", scope, {})
    tables = {t.kind: t for t in dashboards.volume(scope.filters)}
    if kind not in tables:
        raise Http404
    return _download(request, scope, exports.volume_sheet(tables[kind]), f"volume-{kind}", fmt)


# ---------------------------------------------------------------------------- exams


@role_required(*ALL_ROLES)
def exams(request: HttpRequest) -> HttpResponse:
    """The exams behind a number: the page's filters plus the cell's own (year, month,
    radiologist) and which exams the page counted (all, signed, or in the ledger)."""
    if has_role(request.user, RADIOLOGIST) and request.GET.get("basis") == "ledger":
        raise Http404
    scope = _scope(request, ExamListForm)
    if scope.filters is None:
        return _render(request, "billing/dashboards/exams.html", scope, {})
    data = scope.form.cleaned_data if scope.form.is_bound else {}
    basis = data.get("basis") or "all"
    consults = dashboards.volume_consults(scope.filters)
    if basis == "signed":
        consults = consults.filter(signed_at__isnull=False)
    elif basis == "ledger":
        consults = consults.filter(Exists(LedgerEntry.objects.filter(consult=OuterRef("pk"))))
    if data.get("year"):
        consults = consults.filter(exam_date__year=data["year"])
    if data.get("quarter"):
        consults = consults.filter(exam_date__quarter=data["quarter"])
    count = None
    if data.get("month"):
        year, month = data["month"].split("-")
        consults = consults.filter(exam_date__year=int(year), exam_date__month=int(month))
    else:
        # Counting a province's consults for the page numbers took a second; the rollup
        # holds the same count.
        count = dashboards.exam_count(scope.filters, basis, year=data.get("year"), quarter=data.get("quarter"))
    net_saving = (
        LedgerEntry.objects.filter(consult=OuterRef("pk")).values("consult").annotate(s=Sum("saving")).values("s")
    )
    consults = (
        consults.select_related("facility", "radiologist")
        .annotate(net_saving=Subquery(net_saving))
        .order_by("exam_date", "arrived_at", "id")
    )
    page = CountedPaginator(consults, PAGE_SIZE, count=count).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return _render(
        request,
        "billing/dashboards/exams.html",
        scope,
        {
            "page": page,
            "page_query": query.urlencode(),
            "basis": basis,
            "count": page.paginator.count,
            # The consult page is the technologists' and radiologists' (consults_for).
            "links_consults": has_role(request.user, *CLINICAL_ROLES),
        },
    )
