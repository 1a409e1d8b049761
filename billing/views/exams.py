"""The list of the exams behind any number on the dashboards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db.models import Exists, OuterRef, Subquery, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language, ngettext

from billing import dashboards, formatting
from billing.forms import ExamListForm
from billing.models import LedgerEntry
from billing.views.common import (
    ALL_ROLES,
    MONEY_ROLES,
    PAGE_SIZE,
    CountedPaginator,
    render_page,
    scope_of,
)
from cloudpacs.services import named_parts_in, part_name_map
from consults.models import Consult, Priority
from facilities.access import (
    CLINICAL_ROLES,
    RADIOLOGIST,
    has_role,
    role_required,
)
from facilities.forms import page_number


@role_required(*ALL_ROLES)
def exams(request: HttpRequest) -> HttpResponse:
    """The exams behind a number: the page's filters plus the cell's own (year, month,
    radiologist) and which exams the page counted (all, signed, or in the ledger)."""
    scope = scope_of(request, ExamListForm)
    asked = scope.form.cleaned_data if scope.form.is_bound else {}
    if has_role(request.user, RADIOLOGIST) and asked.get("basis") == "ledger":
        raise Http404
    if scope.filters is None:
        return render_page(request, "billing/dashboards/exams.html", scope, {})
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
        # Newest first, as every list an administrator opens here: the latest exams are the
        # ones asked about (the demo's history starts in 2022).
        .order_by("-exam_date", "-arrived_at", "-id")
    )
    page = CountedPaginator(consults, PAGE_SIZE, count=count).get_page(page_number(request.GET))
    # The consult page is the technologists' and radiologists' (consults_for).
    links = has_role(request.user, *CLINICAL_ROLES)
    money = has_role(request.user, *MONEY_ROLES)
    labels = ExamLabels.now()
    query = request.GET.copy()
    query.pop("page", None)
    return render_page(
        request,
        "billing/dashboards/exams.html",
        scope,
        {
            "page": page,
            "page_query": query.urlencode(),
            "basis": basis,
            "count": page.paginator.count,
            "rows": [exam_row(c, labels, links=links, money=money) for c in page],
        },
    )


@dataclass(frozen=True)
class ExamLabels:
    """What every row of a page shows the same way: the priorities' and statuses' names in
    the page's language, the language, the consult page's address with a stand-in id."""

    priorities: dict[str, str]
    statuses: dict[str, str]
    language: str
    consult_url: str
    # The parts' names in the page's language, by their Chinese names (none for Chinese).
    parts: dict[str, str]

    @classmethod
    def now(cls) -> ExamLabels:
        return cls(
            {k: str(v) for k, v in Priority.choices},
            {k: str(v) for k, v in Consult.Status.choices},
            get_language() or "",
            reverse("consults:detail", args=[_STAND_IN]),
            part_name_map(get_language() or ""),
        )


_STAND_IN = UUID(int=0)


def _moment(value: datetime | None) -> str:
    return "" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def exam_row(c: Consult, labels: ExamLabels, *, links: bool, money: bool) -> SafeString:
    """A row of the exam list, built here (a template's fifty rows, each with a dozen filters
    and lookups, were most of the page's time): the HTML the row template gave."""
    day = c.exam_date.isoformat()
    if links:
        day = f'<a href="{escape(labels.consult_url.replace(str(_STAND_IN), str(c.uuid)))}">{day}</a>'
    parts = escape(ngettext("%(n)s 个部位", "%(n)s 个部位", c.body_parts) % {"n": c.body_parts})
    named = f"{escape(named_parts_in(c.body_part_names, labels.language, labels.parts))} " if c.body_part_names else ""
    minutes = ""
    if c.signed_at is not None and c.signed_at != c.arrived_at:
        minutes = str(round((c.signed_at - c.arrived_at).total_seconds() / 60))
    priority = escape(labels.priorities.get(c.priority, c.priority))
    status = escape(labels.statuses.get(c.status, c.status))
    cells = [
        f"<td>{day}</td>",
        f"<td>{escape(formatting.place_name(c.facility, labels.language))}</td>",
        f"<td>{escape(c.kind)}</td>",
        f'<td>{named}<span class="muted">{parts}</span></td>',
        f'<td><span class="priority priority-{escape(c.priority)}">{priority}</span></td>',
        f'<td><span class="status status-{escape(c.status)}">{status}</span></td>',
        f"<td>{escape(str(c.radiologist)) if c.radiologist else ''}</td>",
        f"<td>{_moment(c.arrived_at)}</td><td>{_moment(c.signed_at)}</td>",
        f'<td class="num">{minutes}</td>',
    ]
    if money:
        cells.append(f'<td class="num">{formatting.yuan(getattr(c, "net_saving", None))}</td>')
    return mark_safe("<tr>" + "".join(cells) + "</tr>")  # noqa: S308 -- every value is escaped
