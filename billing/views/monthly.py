"""The monthly report page: the reports made (by the periodic task on the 1st, or here on
demand) listed for download, and a month chosen to make one now. Administrators only:
the report is the county's, every township's figures and money together."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from billing import monthly
from billing.forms import MonthlyReportForm
from billing.models import MonthlyReport
from billing.reports.common import recorded_span
from billing.reports.monthly import previous_month
from facilities.access import ADMINISTRATOR, role_required
from facilities.services import audit

LISTED = 36


@role_required(ADMINISTRATOR)
@require_http_methods(["GET", "POST"])
def monthly_reports(request: HttpRequest) -> HttpResponse:
    span = recorded_span()
    first_month = span[0] if span else None
    if request.method == "POST":
        form = MonthlyReportForm(request.POST, first_month=first_month)
        if form.is_valid():
            report = monthly.make_report(form.cleaned_data["month"], by=request.user)  # type: ignore[arg-type]
            messages.success(request, _("已生成 %(month)s 的月报。") % {"month": f"{report.month:%Y-%m}"})
            return redirect("billing:dashboards:monthly")
    else:
        last_month = previous_month(timezone.localdate())
        form = MonthlyReportForm(initial={"month": f"{last_month:%Y-%m}"}, first_month=first_month)
    reports = MonthlyReport.objects.select_related("made_by").defer("pdf")[:LISTED]
    return render(
        request,
        "billing/dashboards/monthly.html",
        {"form": form, "reports": reports, "current": "monthly", "shows_money": True, "shows_reports": True},
        status=400 if form.is_bound and not form.is_valid() else 200,
    )


@role_required(ADMINISTRATOR)
@require_GET
def monthly_pdf(request: HttpRequest, report_uuid: UUID) -> HttpResponse:
    report = get_object_or_404(MonthlyReport, uuid=report_uuid)
    audit("billing.monthly_report.downloaded", request=request, obj=report, month=f"{report.month:%Y-%m}")
    response = HttpResponse(bytes(report.pdf), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{report.filename}"'
    return response
