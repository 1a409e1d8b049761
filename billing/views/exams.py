"""The list of the exams behind any number on the dashboards."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Subquery, Sum
from django.http import Http404, HttpRequest, HttpResponse

from billing import dashboards
from billing.forms import ExamListForm
from billing.models import LedgerEntry
from billing.views.common import (
    ALL_ROLES,
    PAGE_SIZE,
    CountedPaginator,
    render_page,
    scope_of,
)
from facilities.access import (
    CLINICAL_ROLES,
    RADIOLOGIST,
    has_role,
    role_required,
)


@role_required(*ALL_ROLES)
def exams(request: HttpRequest) -> HttpResponse:
    """The exams behind a number: the page's filters plus the cell's own (year, month,
    radiologist) and which exams the page counted (all, signed, or in the ledger)."""
    if has_role(request.user, RADIOLOGIST) and request.GET.get("basis") == "ledger":
        raise Http404
    scope = scope_of(request, ExamListForm)
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
        .order_by("exam_date", "arrived_at", "id")
    )
    page = CountedPaginator(consults, PAGE_SIZE, count=count).get_page(request.GET.get("page"))
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
            # The consult page is the technologists' and radiologists' (consults_for).
            "links_consults": has_role(request.user, *CLINICAL_ROLES),
        },
    )
