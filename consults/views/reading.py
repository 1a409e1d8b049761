"""The reading pages: one consult's reporting page (images, report form, templates, priors,
the workflow's buttons), the worklist's actions, the township's critical-finding alerts and
their acknowledgement, report templates, and the printable PDF.

Each view authorizes through facilities.access, finds the consult in the user's scope (a
consult outside it is a 404, for every role), calls one step of consults.workflow, and
turns a refused step into 403 (someone else's lock, not a senior) or a message."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from functools import wraps
from typing import Any, cast
from uuid import UUID

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cloudpacs.models import Study
from cloudpacs.services import body_parts_for_kind, image_series, same_patient_studies
from cloudpacs.views.viewer import viewer_context
from consults import delivery, report_texts, services, workflow
from consults.forms import (
    AddendumForm,
    AlertsPageForm,
    ConsultRequestForm,
    CriticalFindingForm,
    PhraseDeleteForm,
    PhraseForm,
    ReassignForm,
    ReportForm,
    ReportPdfForm,
    ReportTemplateForm,
    ReturnToForm,
    first_error,
)
from consults.models import (
    Consult,
    ConsultQuerySet,
    CriticalFinding,
    Escalation,
    Report,
    ReportDelivery,
    ReportTemplate,
    report_language,
)
from consults.pdf import render_report_pdf
from consults.rules import Step, may_acknowledge
from facilities.access import (
    CLINICAL_ROLES,
    RADIOLOGIST,
    TECHNOLOGIST,
    consult_or_404,
    consults_for,
    has_role,
    role_required,
    studies_for,
)
from facilities.models import ExamKind, User
from facilities.services import audit


def _consult(request: HttpRequest, consult_uuid: UUID) -> Consult:
    return cast(Consult, consult_or_404(request, consult_uuid))


def _page(consult: Consult) -> str:
    return reverse("reading:page", args=[consult.uuid])


def _next_or(request: HttpRequest, default: str) -> str:
    return ReturnToForm(request.POST, host=request.get_host(), secure=request.is_secure()).target(default)


def workflow_step(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A POST that takes one step on a consult in the user's scope.

    The consult is looked up first, so a technologist of another township gets the same 404
    as for a consult that does not exist. Whether this user may take the step is the rule's
    (consults.rules), which the service applies: a refusal for who they are is a 403, one
    for the consult's state a message on the page."""

    @role_required(*CLINICAL_ROLES)
    @require_POST
    @wraps(view)
    def wrapper(request: HttpRequest, consult_uuid: UUID) -> HttpResponse:
        consult = _consult(request, consult_uuid)
        try:
            return view(request, consult)
        except workflow.NotAllowed as refused:
            raise PermissionDenied(str(refused)) from refused
        except workflow.WorkflowError as refused:
            messages.error(request, str(refused))
            return redirect(_page(consult))

    return wrapper


@role_required(*CLINICAL_ROLES)
@require_GET
def reading_page(request: HttpRequest, consult_uuid: UUID) -> HttpResponse:
    """The consult's page. Viewing it changes nothing: opening the consult, claiming it and
    confirming the report's receipt are the buttons' POSTs."""
    return _show(request, _consult(request, consult_uuid))


def _show(request: HttpRequest, consult: Consult, refused: forms.Form | None = None) -> HttpResponse:
    """The page, and again with a refused form (400): its errors beside its fields, and
    what was typed in them as posted."""
    user = request.user
    is_radiologist = has_role(user, RADIOLOGIST)
    report = (
        Report.objects.select_related("author", "preliminary_by", "signed_by")
        .prefetch_related("addenda__author")
        .filter(consult=consult)
        .first()
    )
    signed = report is not None and report.is_signed
    audit("consults.report.viewed", request=request, obj=consult, signed=signed, page="reading")

    study: Study | None = consult.study
    series = list(image_series(study)) if study is not None else []
    priors = []
    if study is not None:
        # The patient's earlier studies by the identity rules (the same facility's Patient ID,
        # or across townships a shared national ID), as far as this user may open them.
        priors = list(
            studies_for(user)
            .filter(pk__in=same_patient_studies(study).values("pk"))
            .select_related("consult__report", "facility")
            .order_by("-study_date", "-id")[:20]
        )
    prior_rows = []
    for prior in priors:
        prior_consult = getattr(prior, "consult", None)
        prior_report = getattr(prior_consult, "report", None) if prior_consult is not None else None
        prior_rows.append(
            {
                "study": prior,
                "consult": prior_consult,
                "impression": prior_report.impression if prior_report and prior_report.is_signed else "",
            }
        )

    now = timezone.now()
    due_at = consult.due_at or workflow.due_at_for(consult)
    steps = workflow.allowed_steps(user, consult, now)
    held_by_me = consult.radiologist_id == user.pk and consult.is_held
    findings = consult.critical_findings.select_related("flagged_by", "acknowledged_by")
    readers = workflow.on_duty(now, consult.kind) if Step.REASSIGN in steps else User.objects.none()
    page_forms: dict[str, forms.Form] = {
        "report_form": ReportForm(initial={"findings": report.findings, "impression": report.impression})
        if report is not None
        else ReportForm(),
        "addendum_form": AddendumForm(),
        "critical_form": CriticalFindingForm(),
        "reassign_form": ReassignForm(readers=readers),
        "request_form": ConsultRequestForm.of(consult),
    }
    for name, form in page_forms.items():
        if refused is not None and type(refused) is type(form):
            page_forms[name] = refused
    context: dict[str, Any] = {
        "consult": consult,
        "study": study,
        "patient": study.patient if study is not None else None,
        "series": series,
        "report": report,
        "signed": signed,
        # A township sees the report once signed; readers see drafts too.
        "show_report": signed or is_radiologist,
        "priors": prior_rows,
        "critical_findings": findings,
        "escalations": consult.escalations.select_related("to_user", "from_radiologist") if is_radiologist else [],
        "is_radiologist": is_radiologist,
        # Readers get the diagnostic viewer beside the report; the township, thumbnails.
        "show_viewer": is_radiologist and study is not None,
        "held_by_me": held_by_me,
        "locked_by_other": consult.is_held and not held_by_me,
        # What this user may do here: the page shows exactly these buttons (consults.rules).
        "steps": steps,
        "body_part": services.body_part_label(consult),
        "requires_review": consult.facility.requires_second_signature,
        **(_report_texts(user, consult) if Step.EDIT in steps else {"templates": []}),
        "due_at": due_at,
        "overdue": consult.is_open and now >= due_at,
        "time_left": due_at - now if consult.is_open else None,
        "readers": readers,
        **page_forms,
        # Where the request's correction returns to: this page, or the one it was posted from.
        "return_to": _next_or(request, _page(consult)) if refused is not None else request.get_full_path(),
    }
    if context["show_viewer"]:
        context.update(viewer_context(study, user))  # type: ignore[arg-type]
    return render(request, "consults/reading/page.html", context, status=200 if refused is None else 400)


@workflow_step
def claim(request: HttpRequest, consult: Consult) -> HttpResponse:
    workflow.claim_consult(consult, request.user)  # type: ignore[arg-type]
    messages.success(request, _("已领取该会诊。"))
    return redirect(_next_or(request, _page(consult)))


@workflow_step
def open_(request: HttpRequest, consult: Consult) -> HttpResponse:
    """开始阅片: the reader of a consult given to them by the roster starts on it."""
    workflow.open_consult(consult, request.user)  # type: ignore[arg-type]
    return redirect(_page(consult))


@workflow_step
def receive(request: HttpRequest, consult: Consult) -> HttpResponse:
    """已收到: the township's technologist confirms the signed report reached them."""
    workflow.confirm_receipt(consult, request.user, channel="web")  # type: ignore[arg-type]
    messages.success(request, _("已确认收到报告。"))
    return redirect(_next_or(request, _page(consult)))


@workflow_step
def release(request: HttpRequest, consult: Consult) -> HttpResponse:
    workflow.release_consult(consult, request.user)  # type: ignore[arg-type]
    messages.success(request, _("已释放该会诊，退回共享工作列表。"))
    return redirect(_next_or(request, reverse("consults:worklist")))


@workflow_step
def reassign(request: HttpRequest, consult: Consult) -> HttpResponse:
    form = ReassignForm(request.POST, readers=workflow.on_duty(timezone.now(), consult.kind))
    if not form.is_valid():
        return _refuse(request, consult, form, Step.REASSIGN)
    reader = workflow.reassign_consult(
        consult,
        by=request.user,  # type: ignore[arg-type]
        to=form.cleaned_data["to"],
        reason="lead",
    )
    if reader is None:
        messages.info(request, _("没有其他在班医师，会诊已退回共享工作列表。"))
    else:
        messages.success(request, _("已重新分配给 %(reader)s。") % {"reader": reader})
    return redirect(_page(consult))


@workflow_step
def save_report(request: HttpRequest, consult: Consult) -> HttpResponse:
    """The report form: save a draft, sign preliminary (初诊), or sign (签发/审核)."""
    form = ReportForm(request.POST)
    if not form.is_valid():
        return _refuse(request, consult, form, form.step)
    user = request.user
    action = form.cleaned_data["action"]
    if action == ReportForm.PRELIMINARY:
        workflow.sign_preliminary(consult, user, **form.text())  # type: ignore[arg-type]
        messages.success(request, _("初诊报告已提交，等待上级医师审核。"))
    elif action in (ReportForm.SIGN, ReportForm.SIGN_NEXT):
        workflow.sign_final(consult, user, **form.text())  # type: ignore[arg-type]
        messages.success(request, _("报告已签发。"))
        if action == ReportForm.SIGN_NEXT:
            return _take_next(request)
    else:
        workflow.save_draft(consult, user, **form.text())  # type: ignore[arg-type]
        messages.success(request, _("草稿已保存。"))
    return redirect(_page(consult))


@workflow_step
def addendum(request: HttpRequest, consult: Consult) -> HttpResponse:
    form = AddendumForm(request.POST)
    if not form.is_valid():
        return _refuse(request, consult, form, Step.ADDENDUM)
    workflow.add_addendum(consult, request.user, form.cleaned_data["text"])  # type: ignore[arg-type]
    messages.success(request, _("补充报告已添加。"))
    return redirect(_page(consult))


@workflow_step
def critical(request: HttpRequest, consult: Consult) -> HttpResponse:
    form = CriticalFindingForm(request.POST)
    if not form.is_valid():
        return _refuse(request, consult, form, Step.FLAG_CRITICAL)
    workflow.flag_critical(consult, request.user, form.cleaned_data["description"])  # type: ignore[arg-type]
    messages.warning(request, _("危急值已报告，申请机构会立即收到提醒。"))
    return redirect(_page(consult))


def _refuse(request: HttpRequest, consult: Consult, form: forms.Form, step: Step) -> HttpResponse:
    """A form with a bad field: first the step's rule, so that a user who may not take it
    gets the 403 (or the message) they would get with a good one; then the page again, the
    form's errors beside its fields and its text as posted."""
    workflow.require(step, request.user, consult)  # type: ignore[arg-type]
    return _show(request, consult, refused=form)


def _take_next(request: HttpRequest) -> HttpResponse:
    """Open this reader's next consult: first the most urgent of those already given to
    them (assigned by the roster, or opened and not yet reported), then the most urgent
    waiting one they may claim; back to the worklist when there is none."""
    user = request.user
    kinds = [kind for kind in ExamKind.values if user.can_read(kind)]  # type: ignore[union-attr]
    held = cast(ConsultQuerySet, consults_for(user)).filter(
        radiologist=user.pk, status__in=[Consult.Status.ASSIGNED, Consult.Status.OPENED]
    )
    for consult in held.by_urgency()[:200]:
        if consult.status == Consult.Status.ASSIGNED:
            try:
                workflow.open_consult(consult, user)  # type: ignore[arg-type]
            except workflow.WorkflowError:
                continue  # reassigned meanwhile
        return redirect(_page(consult))
    waiting = cast(ConsultQuerySet, consults_for(user)).filter(
        status=Consult.Status.ARRIVED, radiologist__isnull=True, kind__in=kinds
    )
    for consult in waiting.by_urgency()[:200]:
        try:
            workflow.claim_consult(consult, user)  # type: ignore[arg-type]
        except workflow.WorkflowError:
            continue  # another reader was quicker
        return redirect(_page(consult))
    messages.info(request, _("没有待领取的会诊。"))
    return redirect(reverse("consults:worklist"))


@role_required(RADIOLOGIST)
@require_POST
def claim_next(request: HttpRequest) -> HttpResponse:
    """The worklist's 'take the next one': the most urgent waiting consult this reader may read."""
    return _take_next(request)


@role_required(TECHNOLOGIST)
@require_POST
def correct_request(request: HttpRequest, consult_uuid: UUID) -> HttpResponse:
    consult = _consult(request, consult_uuid)
    form = ConsultRequestForm(request.POST)
    try:
        if not form.is_valid():
            workflow.require(Step.CORRECT_REQUEST, request.user, consult)  # type: ignore[arg-type]
            return _show(request, consult, refused=form)
        workflow.correct_request(consult, request.user, **form.posted())  # type: ignore[arg-type]
    except workflow.NotAllowed as refused:
        raise PermissionDenied(str(refused)) from refused
    except workflow.RequestLocked as refused:
        # The page no longer offers the form once a reader opened the consult; a form
        # left open in another tab lands here: say so plainly, change nothing.
        return render(
            request, "consults/reading/refused.html", {"consult": consult, "message": str(refused)}, status=409
        )
    except workflow.WorkflowError as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, _("会诊申请已更新。"))
    return redirect(_next_or(request, _page(consult)))


@role_required(RADIOLOGIST, TECHNOLOGIST)
@require_POST
def retry_delivery(request: HttpRequest, consult_uuid: UUID) -> HttpResponse:
    """Send a report whose send-back to the township's archive failed once more."""
    consult = _consult(request, consult_uuid)
    outbox = ReportDelivery.objects.filter(consult=consult).select_related("consult").first()
    try:
        if outbox is None:
            workflow.require(Step.RETRY_DELIVERY, request.user, consult)  # type: ignore[arg-type]
        elif delivery.retry(outbox, request.user):  # type: ignore[arg-type]
            messages.success(request, _("报告将重新回传。"))
    except workflow.NotAllowed as refused:
        raise PermissionDenied(str(refused)) from refused
    except workflow.WorkflowError as refused:
        messages.info(request, str(refused))
    return redirect(_next_or(request, _page(consult)))


def _finding(request: HttpRequest, finding_uuid: UUID) -> CriticalFinding:
    finding = get_object_or_404(CriticalFinding.objects.select_related("consult"), uuid=finding_uuid)
    if not consults_for(request.user).filter(pk=finding.consult_id).exists():
        raise Http404
    return finding


@role_required(*CLINICAL_ROLES)
@require_POST
def acknowledge(request: HttpRequest, finding_uuid: UUID) -> HttpResponse:
    finding = _finding(request, finding_uuid)
    try:
        workflow.acknowledge_critical(finding, request.user)  # type: ignore[arg-type]
    except workflow.NotAllowed as refused:
        raise PermissionDenied(str(refused)) from refused
    messages.success(request, _("已确认收到危急值。"))
    return redirect(_next_or(request, _page(finding.consult)))


@role_required(*CLINICAL_ROLES)
@require_GET
def alerts(request: HttpRequest) -> HttpResponse:
    """Unacknowledged critical findings: a township's own, or every township's for readers.

    With ?fragment=1 only the alert list, for other pages to include or poll (htmx)."""
    user = request.user
    if has_role(user, TECHNOLOGIST):
        findings = list(workflow.open_critical_findings(user.facility_id))  # type: ignore[union-attr,arg-type]
    else:
        findings = list(
            CriticalFinding.objects.select_related("consult__facility", "flagged_by", "consult__study__patient")
            .filter(acknowledged_at__isnull=True)
            .order_by("flagged_at", "id")[:100]
        )
    escalations = []
    if has_role(user, RADIOLOGIST):
        escalations = list(
            Escalation.objects.select_related("consult__facility", "from_radiologist")
            .filter(to_user=user.pk, at__gte=timezone.now() - timedelta(days=1))
            .order_by("-at")[:50]
        )
    only_the_list = AlertsPageForm(request.GET).only_the_list()
    template = "consults/reading/_alerts.html" if only_the_list else "consults/reading/alerts.html"
    return render(
        request,
        template,
        # A technologist's list is their own township's, and so all theirs to acknowledge.
        {
            "findings": findings,
            "escalations": escalations,
            "can_acknowledge": has_role(user, TECHNOLOGIST) and may_acknowledge(user, user.facility_id),  # type: ignore[union-attr]
        },
    )


def _report_texts(user: Any, consult: Consult) -> dict[str, Any]:
    """What the report form is written from: the kind's templates (those for the study's
    parts first), the normal report for its parts, and the reader's phrases."""
    language = translation.get_language()
    templates = report_texts.templates_for(consult, language)
    normal = report_texts.normal_report_for(consult, language)
    return {
        "templates": [
            {
                "id": row.pk,
                "name": row.name,
                "body_part": row.body_part,
                "findings": row.findings,
                "impression": row.impression,
                "fits": row.fits,  # type: ignore[attr-defined]
            }
            for row in templates
        ],
        "normal_report": normal.as_dict() if normal is not None else None,
        "phrases": [
            {"id": str(row.uuid), "shortcut": row.shortcut, "text": row.text, "department": row.is_department}
            for row in report_texts.phrases_for(user, language, consult.kind)
        ],
    }


@role_required(RADIOLOGIST)
@require_http_methods(["GET", "POST"])
def templates(request: HttpRequest) -> HttpResponse:
    """Report templates by modality and body part; a radiologist adds their own."""
    language = translation.get_language()
    if request.method == "POST":
        form = ReportTemplateForm(request.POST)
        if not form.is_valid():
            messages.error(request, first_error(form))
            return redirect(reverse("reading:templates"))
        try:
            report_texts.add_template(
                request.user,  # type: ignore[arg-type]
                **{**form.cleaned_data, "language": form.cleaned_data["language"] or language},
            )
        except workflow.WorkflowError as refused:
            messages.error(request, str(refused))
        else:
            messages.success(request, _("模板已添加。"))
        return redirect(reverse("reading:templates"))
    rows = (
        ReportTemplate.objects.filter(is_active=True, language=report_language(language))
        .select_related("author")
        .prefetch_related("parts")
    )
    return render(
        request,
        "consults/reading/templates.html",
        {
            "templates": rows,
            "kinds": ExamKind.choices,
            "body_parts": body_parts_for_kind(),
            "language": language,
        },
    )


@role_required(RADIOLOGIST)
@require_http_methods(["GET", "POST"])
def phrases(request: HttpRequest) -> HttpResponse:
    """The radiologist's own phrase bank, beside the department's (kept in the admin)."""
    user = request.user
    language = translation.get_language()
    if request.method == "POST":
        form = PhraseForm(request.POST)
        if not form.is_valid():
            messages.error(request, first_error(form))
            return redirect(reverse("reading:phrases"))
        try:
            report_texts.add_phrase(
                user,  # type: ignore[arg-type]
                **{**form.cleaned_data, "language": form.cleaned_data["language"] or language},
            )
        except workflow.WorkflowError as refused:
            messages.error(request, str(refused))
        else:
            messages.success(request, _("常用语已添加。"))
        return redirect(reverse("reading:phrases"))
    rows = list(report_texts.phrases_for(user, language))  # type: ignore[arg-type]
    return render(
        request,
        "consults/reading/phrases.html",
        {
            "own": [row for row in rows if not row.is_department],
            "department": [row for row in rows if row.is_department],
            "form": PhraseForm(initial={"language": report_language(language)}),
        },
    )


@role_required(RADIOLOGIST)
@require_POST
def delete_phrase(request: HttpRequest) -> HttpResponse:
    form = PhraseDeleteForm(request.POST)
    if not form.is_valid():
        raise Http404
    try:
        report_texts.delete_phrase(request.user, form.cleaned_data["phrase"])  # type: ignore[arg-type]
    except workflow.NotAllowed as refused:
        raise Http404 from refused
    messages.success(request, _("常用语已删除。"))
    return redirect(reverse("reading:phrases"))


@role_required(*CLINICAL_ROLES)
@require_http_methods(["GET", "POST"])
def report_pdf(request: HttpRequest, consult_uuid: UUID) -> HttpResponse:
    """The signed report as a PDF. A GET only prints it; the township's print button posts,
    and its first post counts as the report reaching the township (recorded once).

    Its labels are in the language asked for (ReportPdfForm), else the page's: whoever
    prints reads them. A page in English also offers the Chinese copy, the one a Chinese
    township hands its patient; the copy sent back to the township's archive is always in
    the site's language (consults.delivery)."""
    consult = _consult(request, consult_uuid)
    form = ReportPdfForm(request.POST if request.method == "POST" else request.GET)
    if not form.is_valid():
        raise Http404
    language = str(form.cleaned_data["language"] or report_language(translation.get_language()))
    report = Report.objects.select_related("author", "preliminary_by", "signed_by").filter(consult=consult).first()
    if report is None or not report.is_signed:
        raise Http404
    if request.method == "POST" and Step.RECEIVE in workflow.allowed_steps(request.user, consult):
        # Delivered meanwhile (its archive, another tab): the PDF is served all the same.
        with suppress(workflow.WorkflowError):
            workflow.confirm_receipt(consult, request.user, channel="pdf")  # type: ignore[arg-type]
    pdf = render_report_pdf(consult, report, language)
    audit("consults.report.printed", request=request, obj=consult)
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Language"] = language
    response["Content-Disposition"] = f'inline; filename="report-{consult.uuid}.pdf"'
    return response
