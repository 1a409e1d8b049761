"""Services of the archive's worklist: the body-part vocabulary, orders (检查申请) registered
at a township, the Modality Worklist query over them, Modality Performed Procedure Steps,
and linking an arriving study to its order.

The archive keeps the orders as a PACS/RIS keeps its worklist; the consults app reads an
order when it opens a consult, and the receiver (dicomnode) parses DICOM queries and
hands them here. Neither of the two is imported."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from pydicom.uid import generate_uid

from cloudpacs.models import BodyPart, Instance, Order, OrderPriority, PerformedProcedureStep, Study
from facilities.models import ExamKind, Facility, Modality, User
from facilities.services import audit

logger = logging.getLogger("cloudpacs.orders")

ORDER_REGISTERED = "cloudpacs.order.registered"
ORDER_CANCELLED = "cloudpacs.order.cancelled"
ORDER_LINKED = "cloudpacs.order.linked"
ORDER_MATCH_CONFIRMED = "cloudpacs.order.match_confirmed"
ORDER_MATCH_REJECTED = "cloudpacs.order.match_rejected"
STEP_REPORTED = "cloudpacs.performed_step.reported"

# DICOM Modality values a console of each exam kind puts in a worklist query; the first is
# what the worklist answers when the query leaves Modality open.
MODALITY_CODES: dict[str, tuple[str, ...]] = {ExamKind.CT: ("CT",), ExamKind.DR: ("DX", "CR", "DR")}
# A worklist answer is a township's day or week; a query left wide open is cut here.
MAX_WORKLIST_MATCHES = 500
# A completed step whose images never all arrive is left to the stability delay after this.
PERFORMED_STEP_PATIENCE = timedelta(hours=24)
EARLIEST_SCHEDULE, LATEST_SCHEDULE = 2000, 2100


class OrderError(Exception):
    """An order that cannot be registered or changed as asked; the message says why."""


class OrderNotAllowed(OrderError):
    """The user may not act on this facility's orders."""


# --- The body-part vocabulary ---------------------------------------------------------------


def body_parts_for_kind(kind: str | None = None) -> list[BodyPart]:
    """The active parts that apply to an exam kind (CT or DR), in the vocabulary's order;
    all of them without a kind."""
    parts = list(BodyPart.objects.filter(is_active=True))
    return [part for part in parts if kind is None or kind in part.kind_list]


def body_part_for(code_or_value: str) -> BodyPart | None:
    """The part with this code, or else the one a DICOM BodyPartExamined value maps to."""
    text = (code_or_value or "").strip().upper()
    if not text:
        return None
    parts = list(BodyPart.objects.all())
    for part in parts:
        if part.code == text:
            return part
    for part in parts:
        if text in part.dicom_value_list:
            return part
    return None


def body_part_name(code_or_value: str, language: str = "zh-hans") -> str:
    """The name of a part, by its code or a BodyPartExamined value, in `language` (zh-hans
    or en); a value the vocabulary does not know is returned as it is."""
    part = body_part_for(code_or_value)
    return part.name(language) if part is not None else (code_or_value or "").strip()


def body_part_names(parts: Iterable[BodyPart], language: str = "zh-hans") -> str:
    names = [part.name(language) for part in parts]
    return ", ".join(names) if language.lower().startswith("en") else "、".join(names)


def part_name_map(language: str = "zh-hans") -> dict[str, str]:
    """Each part's Chinese name -> its name in `language`; empty for Chinese, the language
    the names are stored in."""
    if not language.lower().startswith("en"):
        return {}
    return {part.name_zh: part.name(language) for part in BodyPart.objects.all()}


def named_parts_in(text: str, language: str = "zh-hans", names: dict[str, str] | None = None) -> str:
    """A consult's parts as written (胸部、腹部: an order's names, or what the technologist
    typed) in `language`: each name of the vocabulary in that language, anything else as
    written. Chinese is how they are stored, so only another language looks them up
    (`names`: part_name_map's, for a page of many)."""
    if not text or not language.lower().startswith("en"):
        return text
    names = part_name_map(language) if names is None else names
    written = [name.strip() for name in text.replace("，", "、").replace(",", "、").split("、") if name.strip()]
    return ", ".join(names.get(name, name) for name in written)


# --- Registering and cancelling ------------------------------------------------------------


def may_manage_orders(user: User, facility: Facility) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_technologist and user.facility_id == facility.pk)


def modality_code(kind: str) -> str:
    return MODALITY_CODES.get(kind, (kind,))[0]


def _issue_accession_number(now: datetime, attempt: int) -> str:
    """Y + the local date + a sequence of the day: 'Y2509010007', 11 of the 16 characters
    DICOM allows, unique across townships."""
    day = timezone.localtime(now).strftime("%y%m%d")
    prefix = f"Y{day}"
    taken = Order.objects.filter(accession_number__startswith=prefix).count()
    return f"{prefix}{taken + 1 + attempt:04d}"


PINYIN_COMPONENT = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")


def person_name_pinyin(text: str) -> str:
    """The pinyin a technologist types, as the alphabetic group of the worklist's Patient's
    Name: family name first, then the given name, upper case ('Zhang San', 'zhang^san' and
    'Ouyang Xiao Ming' give 'ZHANG^SAN' and 'OUYANG^XIAOMING'). Letters, spaces, hyphens and
    apostrophes only: '=' and '\\' would start another group or value of the name (PS3.5 6.2.1).
    ü is written v, as the registers of Chinese hospitals write it (Lü Bin: LV^BIN)."""
    text = text.strip().replace("ü", "v").replace("Ü", "V")
    if not text:
        return ""
    if "^" in text:
        components = [" ".join(part.split()) for part in text.split("^")]
    else:
        family, _space, given = text.partition(" ")
        components = [family, "".join(given.split())]
    while components and not components[-1]:
        components.pop()
    words = [word for component in components for word in component.split()]
    if len(components) > 5 or not components[0] or not all(PINYIN_COMPONENT.fullmatch(word) for word in words):
        raise OrderError(_("姓名拼音只能包含字母、空格、连字符和 ^，姓在前，如 Zhang San。"))
    return "^".join(components).upper()


def register_order(
    user: User,
    *,
    modality: Modality,
    patient_id: str,
    patient_name: str,
    body_parts: Sequence[BodyPart],
    scheduled_at: datetime,
    patient_name_pinyin: str = "",
    patient_sex: str = "",
    patient_birth_date: date | None = None,
    priority: str = OrderPriority.ROUTINE,
    clinical_history: str = "",
    question: str = "",
    request: object | None = None,
) -> Order:
    """Register an exam for the user's township: it gets its accession number and Study
    Instance UID, and goes on the worklist of the township's consoles."""
    facility = modality.facility
    if not may_manage_orders(user, facility):
        raise OrderNotAllowed(_("只有本院技师可以登记检查。"))
    if not modality.is_active:
        raise OrderError(_("该检查设备已停用。"))
    if not body_parts:
        raise OrderError(_("请至少选择一个检查部位。"))
    wrong = [part.name_zh for part in body_parts if modality.kind not in part.kind_list or not part.is_active]
    if wrong:
        raise OrderError(
            _("以下部位不适用于 %(kind)s 检查：%(parts)s") % {"kind": modality.kind, "parts": "、".join(wrong)}
        )
    if priority not in OrderPriority.values:
        raise OrderError(_("无效的优先级。"))
    if not EARLIEST_SCHEDULE <= scheduled_at.year <= LATEST_SCHEDULE:
        raise OrderError(_("预约时间超出范围。"))
    patient_id, patient_name = patient_id.strip(), patient_name.strip()
    if not patient_id or not patient_name:
        raise OrderError(_("患者 ID 和姓名不能为空。"))
    if "=" in patient_name or "\\" in patient_name:
        raise OrderError(_("患者姓名不能包含 = 或 \\。"))
    patient_name_pinyin = person_name_pinyin(patient_name_pinyin)
    now = timezone.now()
    for attempt in range(20):
        try:
            with transaction.atomic():
                order = Order.objects.create(
                    facility=facility,
                    modality=modality,
                    kind=modality.kind,
                    accession_number=_issue_accession_number(now, attempt),
                    study_instance_uid=generate_uid(),
                    patient_id=patient_id,
                    patient_name=patient_name,
                    patient_name_pinyin=patient_name_pinyin,
                    patient_sex=patient_sex,
                    patient_birth_date=patient_birth_date,
                    priority=priority,
                    clinical_history=clinical_history.strip(),
                    question=question.strip(),
                    scheduled_at=scheduled_at,
                    created_by=user,
                    created_at=now,
                )
                order.body_parts.set(body_parts)
                audit(
                    ORDER_REGISTERED,
                    actor=user,
                    request=request,  # type: ignore[arg-type]
                    obj=order,
                    accession_number=order.accession_number,
                    kind=order.kind,
                    body_parts=[part.code for part in body_parts],
                    priority=priority,
                )
        except IntegrityError:
            # Another registration took this number a moment ago: take the next one.
            continue
        logger.info("order %s registered for %s (%s)", order.accession_number, facility.short_name, modality.ae_title)
        return order
    raise OrderError(_("检查号分配失败，请重试。"))


def cancel_order(order: Order, user: User, *, request: object | None = None) -> Order:
    """Cancel an order never performed: it leaves the worklist. One a console has started
    (MPPS in progress) or whose images arrived cannot be cancelled."""
    if not may_manage_orders(user, order.facility):
        raise OrderNotAllowed(_("只有本院技师可以取消检查。"))
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        if locked.status != Order.Status.SCHEDULED or locked.study_id is not None:
            raise OrderError(_("该检查已开始或已完成，不能取消。"))
        locked.status = Order.Status.CANCELLED
        locked.cancelled_at = timezone.now()
        locked.save(update_fields=["status", "cancelled_at"])
        audit(ORDER_CANCELLED, actor=user, request=request, obj=locked, accession_number=locked.accession_number)  # type: ignore[arg-type]
    return locked


def confirm_match(order: Order, user: User, *, request: object | None = None) -> Order:
    """The technologist confirms that the study linked by patient ID and date is this order's."""
    if not may_manage_orders(user, order.facility):
        raise OrderNotAllowed(_("只有本院技师可以确认关联。"))
    with transaction.atomic():
        locked = Order.objects.select_for_update(of=("self",)).select_related("study").get(pk=order.pk)
        if not locked.needs_confirmation:
            raise OrderError(_("该检查无需确认。"))
        locked.match_confirmed_at = timezone.now()
        locked.save(update_fields=["match_confirmed_at"])
        study_uid = locked.study.study_uid if locked.study else ""
        audit(ORDER_MATCH_CONFIRMED, actor=user, request=request, obj=locked, study_uid=study_uid)  # type: ignore[arg-type]
    return locked


def reject_match(order: Order, user: User, *, request: object | None = None) -> Order:
    """The study linked by patient ID and date is not this order's: the link goes and the
    order is back on the worklist. The consult keeps what it took; the technologist
    corrects it on the reading page if need be."""
    if not may_manage_orders(user, order.facility):
        raise OrderNotAllowed(_("只有本院技师可以确认关联。"))
    with transaction.atomic():
        locked = Order.objects.select_for_update(of=("self",)).select_related("study").get(pk=order.pk)
        if not locked.needs_confirmation:
            raise OrderError(_("该检查无需确认。"))
        study_uid = locked.study.study_uid if locked.study else ""
        locked.study = None
        locked.matched_by = ""
        locked.status = Order.Status.SCHEDULED
        locked.save(update_fields=["study", "matched_by", "status"])
        audit(ORDER_MATCH_REJECTED, actor=user, request=request, obj=locked, study_uid=study_uid)  # type: ignore[arg-type]
    return locked


def orders_of(facility: Facility) -> QuerySet[Order]:
    return Order.objects.filter(facility=facility).select_related("modality", "study").prefetch_related("body_parts")


# --- Linking an arriving study ---------------------------------------------------------------


def order_for_study(study: Study) -> Order | None:
    """The order a study was performed for, linked now if it was not yet: by accession
    number (or the Study Instance UID the worklist gave), else by patient ID and exam date,
    a guess the technologist is asked to confirm. None for a study no order asked for."""
    existing = Order.objects.filter(study=study).first()
    if existing is not None:
        return existing
    candidates = Order.objects.filter(facility_id=study.facility_id, study__isnull=True).exclude(
        status=Order.Status.CANCELLED
    )
    order: Order | None = None
    how = ""
    if study.accession_number:
        order = candidates.filter(accession_number=study.accession_number).first()
        how = Order.Match.ACCESSION
    if order is None:
        order = candidates.filter(study_instance_uid=study.study_uid).first()
        how = Order.Match.ACCESSION
    if order is None:
        order = _by_patient_and_date(study, candidates)
        how = Order.Match.PATIENT_DATE
    if order is None:
        return None
    linked = Order.objects.filter(pk=order.pk, study__isnull=True).update(
        study=study, matched_by=how, status=Order.Status.COMPLETED
    )
    if not linked:
        return Order.objects.filter(study=study).first()
    order.refresh_from_db()
    audit(
        ORDER_LINKED,
        obj=order,
        study_uid=study.study_uid,
        matched_by=how,
        accession_number=order.accession_number,
    )
    logger.info("study %s linked to order %s (%s)", study.study_uid, order.accession_number, how)
    return order


def _by_patient_and_date(study: Study, candidates: QuerySet[Order]) -> Order | None:
    patient_id = study.patient.patient_id if study.patient_id else ""
    exam_date = study.study_date or (timezone.localdate(study.first_received_at) if study.first_received_at else None)
    if not patient_id or exam_date is None:
        return None
    open_orders = [
        order
        for order in candidates.filter(
            patient_id=patient_id, status__in=[Order.Status.SCHEDULED, Order.Status.IN_PROGRESS]
        )
        if timezone.localdate(order.scheduled_at) == exam_date
    ]
    kind = study.modality.kind if study.modality is not None else None
    # The console's own kind first; of several, the one scheduled first.
    open_orders.sort(key=lambda order: (order.kind != kind, order.scheduled_at, order.pk))
    return open_orders[0] if open_orders else None


# --- The Modality Worklist query ----------------------------------------------------------


@dataclass
class WorklistQuery:
    """The matching keys of a Modality Worklist C-FIND, as the receiver parsed them. Empty
    strings and None are universal matching; patterns may hold the wildcards * and ?."""

    modality: str = ""
    station_ae_title: str = ""
    start: datetime | None = None
    end: datetime | None = None
    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    requested_procedure_id: str = ""
    study_instance_uids: list[str] = field(default_factory=list)


def _pattern(text: str) -> re.Pattern[str] | None:
    text = text.strip()
    if not text or text == "*":
        return None
    # fnmatch's [...] is not DICOM's: only * and ? are wildcards (PS3.4 C.2.2.2.4).
    escaped = text.replace("[", "[[]")
    return re.compile(fnmatch.translate(escaped), re.IGNORECASE)


def _name_forms(order: Order) -> list[str]:
    forms = [order.patient_name, order.patient_name.replace("^", "")]
    if order.patient_name_pinyin:
        forms += [order.patient_name_pinyin, f"{order.patient_name_pinyin}={order.patient_name}"]
    return forms


def _name_matches(pattern: str, order: Order) -> bool:
    """A PN query matches when any of its component groups (alphabetic, ideographic,
    phonetic) matches the name or its pinyin."""
    groups = [group for group in pattern.split("=") if group.strip()] or [pattern]
    forms = _name_forms(order)
    for group in groups:
        # 张^三 and 张三 are the same name: the components' separator is not compared.
        for candidate in dict.fromkeys([group, group.replace("^", "")]):
            compiled = _pattern(candidate)
            if compiled is None:
                return True
            if any(compiled.fullmatch(form) for form in forms):
                return True
    return False


def scheduled_steps(facility: Facility, query: WorklistQuery) -> list[Order]:
    """The facility's orders waiting to be performed that match the query: the worklist one
    console sees. Never another township's."""
    orders = (
        Order.objects.filter(facility=facility, status=Order.Status.SCHEDULED, study__isnull=True)
        .select_related("modality")
        .prefetch_related("body_parts")
        .order_by("scheduled_at", "id")
    )
    if query.start is not None:
        orders = orders.filter(scheduled_at__gte=query.start)
    if query.end is not None:
        orders = orders.filter(scheduled_at__lte=query.end)
    if query.station_ae_title.strip():
        station = _pattern(query.station_ae_title)
        if station is not None:
            wanted = [m.pk for m in Modality.objects.filter(facility=facility) if station.fullmatch(m.ae_title)]
            orders = orders.filter(modality_id__in=wanted)
    modality = query.modality.strip().upper()
    if modality:
        kinds = [kind for kind, codes in MODALITY_CODES.items() if modality in codes]
        orders = orders.filter(kind__in=kinds)
    if query.study_instance_uids:
        orders = orders.filter(study_instance_uid__in=query.study_instance_uids)
    matched: list[Order] = []
    patient_id = _pattern(query.patient_id)
    accession = _pattern(query.accession_number)
    procedure = _pattern(query.requested_procedure_id)
    for order in orders[: MAX_WORKLIST_MATCHES * 4]:
        if patient_id is not None and not patient_id.fullmatch(order.patient_id):
            continue
        if accession is not None and not accession.fullmatch(order.accession_number):
            continue
        if procedure is not None and not procedure.fullmatch(order.accession_number):
            continue
        if query.patient_name.strip() and not _name_matches(query.patient_name, order):
            continue
        matched.append(order)
        if len(matched) >= MAX_WORKLIST_MATCHES:
            break
    return matched


# --- Modality Performed Procedure Steps ------------------------------------------------------


class PerformedStepError(Exception):
    """An MPPS request that cannot be applied; `status` is the DIMSE status to answer."""

    status = 0x0110


class DuplicateStep(PerformedStepError):
    status = 0x0111


class UnknownStep(PerformedStepError):
    status = 0x0112


class InvalidStep(PerformedStepError):
    status = 0x0106


class MissingStepStatus(PerformedStepError):
    status = 0x0120


class StepFinal(PerformedStepError):
    # PS3.4 F.7.2.2.4: "Processing failure: Performed Procedure Step Object may no longer be
    # updated", for a step that is COMPLETED or DISCONTINUED.
    status = 0x0110


@dataclass
class PerformedStepReport:
    """What an N-CREATE or N-SET says about a step, as the receiver parsed it; None where
    the message does not carry the attribute."""

    status: str | None = None
    accession_number: str | None = None
    study_instance_uid: str | None = None
    referenced_instances: list[str] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


_STATUSES = {choice.value for choice in PerformedProcedureStep.Status}


def _order_for_step(facility: Facility, report: PerformedStepReport) -> Order | None:
    orders = Order.objects.filter(facility=facility).exclude(status=Order.Status.CANCELLED)
    if report.accession_number:
        found = orders.filter(accession_number=report.accession_number).first()
        if found is not None:
            return found
    if report.study_instance_uid:
        return orders.filter(study_instance_uid=report.study_instance_uid).first()
    return None


def _apply_to_order(step: PerformedProcedureStep) -> None:
    order = step.order
    if order is None or order.status == Order.Status.CANCELLED:
        return
    if step.status == PerformedProcedureStep.Status.IN_PROGRESS and order.status == Order.Status.SCHEDULED:
        order.status = Order.Status.IN_PROGRESS
    elif step.status == PerformedProcedureStep.Status.COMPLETED:
        order.status = Order.Status.COMPLETED
    elif step.status == PerformedProcedureStep.Status.DISCONTINUED and order.study_id is None:
        # Not done after all: the exam goes back on the worklist.
        order.status = Order.Status.SCHEDULED
    order.save(update_fields=["status"])


def create_performed_step(
    modality: Modality, sop_instance_uid: str, report: PerformedStepReport
) -> PerformedProcedureStep:
    """N-CREATE: a console started a step. It must be IN PROGRESS (PS3.4 F.7.2.1)."""
    if report.status is None:
        raise MissingStepStatus("Performed Procedure Step Status is missing")
    if report.status != PerformedProcedureStep.Status.IN_PROGRESS:
        raise InvalidStep(f"a new step must be IN PROGRESS, not {report.status!r}")
    facility = modality.facility
    now = timezone.now()
    try:
        with transaction.atomic():
            step = PerformedProcedureStep.objects.create(
                sop_instance_uid=sop_instance_uid,
                facility=facility,
                modality=modality,
                order=_order_for_step(facility, report),
                status=report.status,
                accession_number=(report.accession_number or "")[:64],
                study_instance_uid=(report.study_instance_uid or "")[:64],
                referenced_instances=report.referenced_instances or [],
                started_at=report.started_at,
                created_at=now,
                updated_at=now,
            )
            _apply_to_order(step)
            _audit_step(step)
    except IntegrityError:
        raise DuplicateStep(f"step {sop_instance_uid} exists already") from None
    return step


def update_performed_step(
    modality: Modality, sop_instance_uid: str, report: PerformedStepReport
) -> PerformedProcedureStep:
    """N-SET: more images, or the end of the step (COMPLETED or DISCONTINUED). A step of
    another township is unknown here; a finished one may no longer change."""
    if report.status is not None and report.status not in _STATUSES:
        raise InvalidStep(f"unknown step status {report.status!r}")
    with transaction.atomic():
        step = (
            PerformedProcedureStep.objects.select_for_update()
            .filter(sop_instance_uid=sop_instance_uid, facility=modality.facility)
            .first()
        )
        if step is None:
            raise UnknownStep(f"no step {sop_instance_uid} of this township")
        if step.status != PerformedProcedureStep.Status.IN_PROGRESS:
            raise StepFinal(f"step {sop_instance_uid} is {step.status} and may no longer be updated")
        if report.referenced_instances is not None:
            step.referenced_instances = report.referenced_instances
        if report.ended_at is not None:
            step.ended_at = report.ended_at
        if report.status is not None:
            step.status = report.status
        step.awaiting_images = step.status == PerformedProcedureStep.Status.COMPLETED and bool(
            step.referenced_instances
        )
        step.updated_at = timezone.now()
        step.save()
        _apply_to_order(step)
        if report.status is not None:
            _audit_step(step)
    return step


def _audit_step(step: PerformedProcedureStep) -> None:
    audit(
        STEP_REPORTED,
        object_type="cloudpacs.performedprocedurestep",
        object_id=step.sop_instance_uid,
        facility=step.facility,
        status=step.status,
        ae_title=step.modality.ae_title,
        accession_number=step.accession_number,
        order=str(step.order.uuid) if step.order is not None else "",
        instances=len(step.referenced_instances),
    )


def performed_studies_ready(now: datetime) -> list[int]:
    """Receiving studies whose images a completed step listed are all stored: they have
    arrived, whatever the stability delay says. Steps that need no more waiting (their
    study arrived, or the images never came within a day) stop being looked at."""
    ready: list[int] = []
    for step in PerformedProcedureStep.objects.filter(awaiting_images=True).order_by("updated_at")[:200]:
        uids = list(step.referenced_instances)
        stored = Instance.objects.filter(sop_instance_uid__in=uids)
        study_pks = set(stored.values_list("series__study_id", flat=True))
        if stored.count() == len(set(uids)):
            receiving = set(
                Study.objects.filter(pk__in=study_pks, status=Study.Status.RECEIVING).values_list("pk", flat=True)
            )
            ready.extend(receiving)
            if not receiving:
                PerformedProcedureStep.objects.filter(pk=step.pk).update(awaiting_images=False)
        elif step.updated_at < now - PERFORMED_STEP_PATIENCE:
            logger.warning(
                "step %s: %d of its %d images never arrived", step.sop_instance_uid, stored.count(), len(uids)
            )
            PerformedProcedureStep.objects.filter(pk=step.pk).update(awaiting_images=False)
    return ready


def settle_performed_steps(study_pks: Iterable[int]) -> None:
    """The studies arrived: their completed steps need no more looking at."""
    uids = set(Instance.objects.filter(series__study_id__in=list(study_pks)).values_list("sop_instance_uid", flat=True))
    for step in PerformedProcedureStep.objects.filter(awaiting_images=True):
        if set(step.referenced_instances) <= uids:
            PerformedProcedureStep.objects.filter(pk=step.pk).update(awaiting_images=False)
