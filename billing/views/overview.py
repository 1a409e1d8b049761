"""The administrators' overview: headline figures, and a way into each dashboard."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing import formatting
from billing.models import LedgerEntry
from consults.models import OPEN_STATUSES, Consult
from facilities.access import ADMINISTRATOR, role_required


@role_required(ADMINISTRATOR)
def dashboard(request: HttpRequest) -> HttpResponse:
    # Two aggregate queries over indexed tables: cheap even with the whole county's history.
    consults = Consult.objects.aggregate(
        total=Count("id"),
        open=Count("id", filter=Q(status__in=OPEN_STATUSES)),
    )
    saving = LedgerEntry.objects.aggregate(total=Sum("saving"))["total"] or Decimal("0.00")
    return render(
        request,
        "billing/dashboard.html",
        {
            "consult_count": consults["total"],
            "open_count": consults["open"],
            "consult_count_text": formatting.number(consults["total"]),
            "open_count_text": formatting.number(consults["open"]),
            "saving_yuan": formatting.yuan(saving),
            "saving_wan": formatting.wan(saving),
        },
    )
