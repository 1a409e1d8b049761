"""Archive pages: one study with its patient, series and the state of its consult."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from cloudpacs import counts
from cloudpacs.models import Order
from facilities.access import CLINICAL_ROLES, role_required, study_or_404
from facilities.services import audit


@role_required(*CLINICAL_ROLES)
def study_detail(request: HttpRequest, study_uid: str) -> HttpResponse:
    study = study_or_404(request, study_uid)
    # The consult lives in a higher app; its reverse accessor is read without importing it.
    consult = getattr(study, "consult", None)
    # The exam the township registered for it, if the study was linked to one.
    order = Order.objects.filter(study=study).prefetch_related("body_parts").first()
    audit("cloudpacs.study.viewed", request=request, obj=study)
    # The counters with the instances the sweep has not counted yet (cloudpacs.counts).
    counts.exact_studies([study])
    return render(
        request,
        "cloudpacs/study_detail.html",
        {
            "study": study,
            "patient": study.patient,
            "series_list": counts.exact_series(counts.with_counted(study.series.all())),
            "consult": consult,
            "order": order,
        },
    )
