"""The administrators' view of open consults: who holds what, what is past its time limit,
and moving many consults to another reader at once when one is away.

Administrators see no patients here (as on the audit page): a consult is its township,
kind, body parts, priority and times, and its history is its audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from consults import workflow
from consults.forms import (
    UNASSIGNED,
    BulkReassignForm,
    OpenConsultsFilterForm,
    OpenConsultsReturnForm,
    first_error,
)
from consults.models import Consult, ConsultQuerySet
from consults.rules import move_refusal
from facilities.access import ADMINISTRATOR, role_required
from facilities.forms import page_number
from facilities.models import Facility, User

PAGE_SIZE = 100


def _filtered(consults: ConsultQuerySet, data: dict[str, Any]) -> ConsultQuerySet:
    if data.get("township"):
        consults = consults.filter(facility=data["township"])
    if data.get("kind"):
        consults = consults.filter(kind=data["kind"])
    if data.get("priority"):
        consults = consults.filter(priority=data["priority"])
    if data.get("radiologist") == UNASSIGNED:
        consults = consults.filter(radiologist__isnull=True)
    elif data.get("radiologist"):
        consults = consults.filter(radiologist__uuid=data["radiologist"])
    if data.get("overdue"):
        consults = consults.filter(due_at__lt=timezone.now())
    return consults


@role_required(ADMINISTRATOR)
@require_GET
def open_consults(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    form = OpenConsultsFilterForm(request.GET or None)
    consults = Consult.objects.open().select_related("facility", "radiologist")
    if form.is_bound and not form.is_valid():
        consults = consults.none()
    elif form.is_bound:
        consults = _filtered(consults, form.cleaned_data)
    # Past or nearest its limit first (the most overdue at the top), then the most urgent.
    consults = consults.by_urgency().order_by(F("due_at").asc(nulls_last=True), F("urgency_rank"), "arrived_at", "id")
    page = Paginator(consults, PAGE_SIZE).get_page(page_number(request.GET))
    query = request.GET.copy()
    query.pop("page", None)
    holders = workflow.holders(now)
    return render(
        request,
        "consults/open_consults.html",
        {
            "form": form,
            "page": page,
            "now": now,
            "holders": holders,
            "open_total": sum(h.total for h in holders),
            "overdue_total": sum(h.overdue for h in holders),
            # The rows with a box to tick: those the rule lets move (not a preliminary
            # report, which waits for any senior's review).
            "movable": {c.pk for c in page.object_list if move_refusal(request.user, c) is None},
            # Who may take them: readers on shift now, least loaded first, with what they read.
            "readers": workflow.on_duty(now),
            "query": query.urlencode(),
            "townships": Facility.objects.filter(kind=Facility.Kind.TOWNSHIP_CENTRE),
        },
        status=400 if form.is_bound and not form.is_valid() else 200,
    )


def _back(request: HttpRequest) -> str:
    # The page's filters come back as they were.
    query = OpenConsultsReturnForm(request.POST).query_string()
    target = reverse("consults:open_consults")
    return f"{target}?{query}" if query else target


@role_required(ADMINISTRATOR)
@require_POST
def bulk_reassign(request: HttpRequest) -> HttpResponse:
    """Move the ticked consults to one reader on duty: all of them or, with any refused
    (signed meanwhile, a reader without the permission), none, with the reason."""
    form = BulkReassignForm(request.POST)
    if not form.is_valid():
        messages.error(request, first_error(form))
        return redirect(_back(request))
    to = form.cleaned_data["to"]
    administrator: User = request.user  # type: ignore[assignment]
    try:
        result = workflow.reassign_consults(
            list(form.cleaned_data["consults"]), by=administrator, to=to, note=form.cleaned_data["note"]
        )
    except workflow.WorkflowError as refused:
        messages.error(request, _("未转派任何会诊：%(reason)s") % {"reason": refused})
        return redirect(_back(request))
    text = _("已将 %(count)s 例会诊转给 %(reader)s。") % {"count": len(result.moved), "reader": to}
    if result.already_held:
        text += " " + _("另有 %(count)s 例本已由其负责。") % {"count": len(result.already_held)}
    messages.success(request, text)
    return redirect(_back(request))
