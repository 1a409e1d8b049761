"""Pages of the consults app: a township's consults, the radiologists' worklist, and one
consult with its report. Every page is authorized and scoped in facilities.access."""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from cloudpacs.models import Order, Study
from cloudpacs.services import exact_studies, study_instances, with_counted
from consults import services, verification, workflow
from consults.forms import BirthDateForm, ConsultRequestForm, ConsultSearchForm, WorklistFilterForm
from consults.models import Consult, ConsultQuerySet, Priority, Report
from consults.rules import Step, is_technologist_of, may_acknowledge
from consults.status import platform_status as gather_platform_status
from facilities.access import (
    ADMINISTRATOR,
    CLINICAL_ROLES,
    RADIOLOGIST,
    TECHNOLOGIST,
    consult_or_404,
    consults_for,
    facilities_for,
    has_role,
    orders_for,
    role_required,
    studies_for,
    study_or_404,
)
from facilities.forms import page_number
from facilities.models import ExamKind, Facility
from facilities.services import audit, client_address, county_hospital

PAGE_SIZE = 50
# Studies without a consult looked at for the township page's two short lists, and shown in each.
PENDING_SCAN = 60
PENDING_SHOWN = 20


def pending_studies(user: Any, facility: Facility) -> list[Study]:
    """The facility's studies without a consult, the latest to begin arriving first (at most
    PENDING_SCAN): a walk along the study_facility_arrival index, each study looked up in the
    consults' study index, that stops at PENDING_SCAN. Not by their last image:
    last_received_at changes with every instance and so is in no index (cloudpacs.models).
    NOT EXISTS rather than `consult__isnull`: PostgreSQL plans the latter's outer join as a
    hash join over every consult (2.7 s at a million studies, bench/scale/archive_indexes.py).
    Their number of instances exact (cloudpacs.counts): most of them are still arriving."""
    consult = Consult.objects.filter(study=OuterRef("pk"))
    queryset = studies_for(user).filter(~Exists(consult), facility=facility)
    return exact_studies(with_counted(queryset).order_by("-first_received_at", "-id")[:PENDING_SCAN])


@role_required(*CLINICAL_ROLES)
def facility_page(request: HttpRequest, facility_uuid: UUID) -> HttpResponse:
    facility = get_object_or_404(facilities_for(request.user), uuid=facility_uuid)
    consults = (
        consults_for(request.user)
        .filter(facility=facility)
        .select_related("study__patient", "delivery")
        .order_by("-arrived_at", "-id")
    )
    search = ConsultSearchForm(request.GET)
    # An invalid criterion (a date range back to front) shows nothing rather than everything.
    consults = services.search_consults(consults, **search.cleaned_data) if search.is_valid() else consults.none()
    searching = search.is_valid() and any(search.cleaned_data.values())
    page = Paginator(consults, PAGE_SIZE).get_page(page_number(request.GET))
    query = request.GET.copy()
    query.pop("page", None)
    # Studies without a consult: still arriving, or arrived and waiting for one; and apart,
    # the ones of a kind the county does not read remotely (ultrasound, XA...), which have
    # arrived and stay archived for viewing, so that they do not fill the first list for good.
    pending: list[Study] = []
    archived: list[Study] = []
    for study in pending_studies(request.user, facility):
        study.exam_kind = services.exam_kind_for_study(study)  # type: ignore[attr-defined]
        if study.exam_kind is None and study.status != Study.Status.RECEIVING:  # type: ignore[attr-defined]
            archived.append(study)
        else:
            pending.append(study)
    # Critical findings the township has not yet acknowledged, at the top of its page.
    findings = list(workflow.open_critical_findings(facility.pk))
    # The township's register (检查登记): what is on its consoles' worklist, and the links by
    # patient ID and date that the technologist has still to confirm.
    registered = orders_for(request.user).filter(facility=facility)
    orders_waiting = registered.filter(
        status__in=[Order.Status.SCHEDULED, Order.Status.IN_PROGRESS], study__isnull=True
    )
    orders_to_confirm = registered.filter(
        matched_by=Order.Match.PATIENT_DATE, match_confirmed_at__isnull=True, study__isnull=False
    )
    return render(
        request,
        "consults/facility.html",
        {
            "facility": facility,
            "page": page,
            "search": search,
            "searching": searching,
            "query": query.urlencode(),
            "pending_studies": pending[:PENDING_SHOWN],
            "archived_studies": archived[:PENDING_SHOWN],
            "findings": findings,
            "can_acknowledge": may_acknowledge(request.user, facility.pk),
            "can_request": is_technologist_of(request.user, facility.pk),
            "orders_waiting": orders_waiting.count(),
            "orders_to_confirm": orders_to_confirm.count(),
        },
    )


@role_required(TECHNOLOGIST)
@require_http_methods(["GET", "POST"])
def request_consult(request: HttpRequest, study_uid: str) -> HttpResponse:
    """The township's technologist asks for a reading of a stored study that has no consult:
    GET shows the request form, POST submits it."""
    study = study_or_404(request, study_uid, studies_for(request.user).select_related("patient", "facility"))
    existing = Consult.objects.filter(study=study).first()
    if existing is not None:
        if request.method == "POST":
            messages.info(request, _("该检查已有会诊申请。"))
        return redirect(reverse("consults:detail", args=[existing.uuid]))
    if request.method == "GET":
        form = ConsultRequestForm(initial={"body_parts": 1, "priority": Priority.ROUTINE})
        return render(request, "consults/request.html", {"study": study, "patient": study.patient, "form": form})
    form = ConsultRequestForm(request.POST)
    if not form.is_valid():
        # The form again, as typed, each error beside its field.
        return render(
            request, "consults/request.html", {"study": study, "patient": study.patient, "form": form}, status=400
        )
    data = form.cleaned_data
    try:
        consult = services.request_consult(
            study,
            request.user,  # type: ignore[arg-type]
            clinical_history=data["clinical_history"],
            body_parts=data["body_parts"] or 1,
            body_part_names=data["body_part_names"],
            priority=data["priority"] or Priority.ROUTINE,
            question=data["question"],
        )
    except workflow.NotAllowed as refused:
        raise PermissionDenied(str(refused)) from refused
    except workflow.WorkflowError as refused:
        messages.error(request, str(refused))
        return redirect(reverse("consults:request", args=[study.study_uid]))
    messages.success(request, _("会诊申请已提交。"))
    return redirect(reverse("consults:detail", args=[consult.uuid]))


def _worklist_filters(request: HttpRequest, consults: ConsultQuerySet) -> tuple[ConsultQuerySet, dict[str, Any]]:
    chosen = WorklistFilterForm(request.GET).chosen()
    if chosen["facility"]:
        consults = consults.filter(facility__code=chosen["facility"])
    if chosen["modality"]:
        consults = consults.filter(kind=chosen["modality"])
    if chosen["status"]:
        consults = consults.filter(status=chosen["status"])
    if chosen["mine"]:
        consults = consults.filter(radiologist_id=request.user.pk)
    return consults, chosen


@role_required(RADIOLOGIST)
def worklist(request: HttpRequest) -> HttpResponse:
    # What a radiologist still has to act on; signed and delivered consults leave the worklist.
    consults = cast(ConsultQuerySet, consults_for(request.user)).open()
    consults, chosen = _worklist_filters(request, consults)
    consults = consults.by_urgency()
    page = Paginator(consults, PAGE_SIZE * 2).get_page(page_number(request.GET))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "consults/worklist.html",
        {
            "page": page,
            "chosen": chosen,
            "facilities": facilities_for(request.user).filter(kind=Facility.Kind.TOWNSHIP_CENTRE, is_active=True),
            "kinds": ExamKind.choices,
            "statuses": WorklistFilterForm.STATUSES,
            "now": timezone.now(),
            "query": query.urlencode(),
        },
    )


@role_required(*CLINICAL_ROLES)
def consult_detail(request: HttpRequest, consult_uuid: UUID) -> HttpResponse:
    consult = consult_or_404(request, consult_uuid, consults_for(request.user).select_related("facility", "modality"))
    report = (
        Report.objects.select_related("author", "preliminary_by", "signed_by")
        .prefetch_related("addenda__author")
        .filter(consult=consult)
        .first()
    )
    study: Study | None = consult.study
    signed = bool(report and report.is_signed)
    # Viewing changes nothing; the township says it has the report with the 已收到 button.
    audit("consults.report.viewed", request=request, obj=consult, signed=signed)
    user = request.user
    steps = workflow.allowed_steps(user, consult)
    return render(
        request,
        "consults/consult_detail.html",
        {
            "consult": consult,
            "study": study,
            "patient": study.patient if study is not None else None,
            "report": report if signed else None,
            "body_part": services.body_part_label(consult),
            "critical_findings": consult.critical_findings.select_related("flagged_by", "acknowledged_by"),
            # What this user may do here: the buttons (consults.rules), as on the reading page.
            "steps": steps,
            # The demo's historical studies are index rows without images: nothing to open.
            "can_view_images": study is not None
            and study_instances(study) > 0
            and (has_role(user, TECHNOLOGIST) or has_role(user, RADIOLOGIST)),
            "request_form": ConsultRequestForm.of(consult) if Step.CORRECT_REQUEST in steps else None,
        },
    )


@require_http_methods(["GET", "POST"])
def verify_report(request: HttpRequest, token: str) -> HttpResponse:
    """Public, no login: is the printed report that carries this token genuine? Facility,
    exam, signer and whether the content still matches its digest taken at signing; the
    clinical content only once the patient's birth date is given. Looks and wrong dates
    are audited; wrong dates are limited per report and per address."""
    found = verification.find(token)
    if found is None:
        raise Http404
    report = found.report
    consult = report.consult
    intact = verification.is_intact(found)
    form = BirthDateForm(request.POST if request.method == "POST" else None)
    unlocked = refused = False
    status = 200
    if request.method == "POST" and form.is_valid():
        attempt = verification.check_birth_date(found, form.cleaned_data["birth_date"], client_address(request))
        if not attempt.allowed:
            refused = True
            status = 429
        elif attempt.matched:
            unlocked = True
        else:
            audit(
                verification.VERIFICATION_FAILED,
                request=request,
                object_type="consults.reportverification",
                object_id=str(found.uuid),
                facility=consult.facility,
            )
            form.add_error("birth_date", _("出生日期不符。"))
    audit(
        verification.VERIFIED,
        request=request,
        object_type="consults.reportverification",
        object_id=str(found.uuid),
        facility=consult.facility,
        intact=intact,
        unlocked=unlocked,
    )
    study = consult.study
    return render(
        request,
        "consults/verify.html",
        {
            "verification": found,
            "county": county_hospital(),
            "report": report,
            "consult": consult,
            "patient": study.patient if study is not None else None,
            "body_part": services.body_part_label(consult),
            "intact": intact,
            "form": form,
            "unlocked": unlocked,
            "refused": refused,
            "addenda": report.addenda.select_related("author") if unlocked else [],
        },
        status=status,
    )


@role_required(ADMINISTRATOR)
@require_GET
def platform_status(request: HttpRequest) -> HttpResponse:
    """Administrators: is every part of the platform running, and is anything waiting to go out?"""
    state = gather_platform_status()
    outboxes = [
        (_("报告回传"), state.deliveries, "deliveries"),
        (_("邮件通知"), state.notifications, "notifications"),
    ]
    return render(
        request,
        "consults/status.html",
        {"state": state, "outboxes": outboxes, "heartbeat_seconds": settings.HEARTBEAT_SECONDS},
    )
