"""Services of the consults app: the workflow from a stable study to a signed report."""

from __future__ import annotations

import logging
import re
from contextlib import AbstractContextManager
from datetime import date, datetime

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from cloudpacs.models import Instance, Series, Study
from cloudpacs.services import body_part_names, last_received, order_for_study
from consults import changes, handoff
from consults.changes import ConsultChanged as ConsultChanged
from consults.models import Consult, Priority
from consults.report_texts import NormalReport as NormalReport
from consults.report_texts import normal_report as normal_report  # the demo's and other apps' report text
from consults.rules import NotAllowed, WorkflowError, check_request, due_at_for, is_technologist_of
from consults.rules import body_part_label as body_part_label  # the pages' and the PDF's
from consults.rules import time_limit_table as time_limit_table  # for the dashboards
from facilities.models import ExamKind, User
from facilities.services import audit

logger = logging.getLogger("consults")

# What the county reads remotely and has a price for: CT, and DR (digital radiography).
# A study is of one of these kinds by its Modality codes, else by its SOP classes; the
# machine that sent it does not decide (a CT console also forwards ultrasound and
# reconstructions from other machines). Any other study is archived and viewable, and
# opens no consult and so no ledger entry.
_CT_CODES = {"CT"}
_DR_CODES = {"CR", "DX", "DR", "RG"}
_CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
}
_DR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
}


def exam_kind_for_study(study: Study) -> str | None:
    """CT or DR from the study's own data: its Modality codes, else its SOP classes. None
    for a study of any other kind (ultrasound, XA, MG, NM, ECG, documents...)."""
    codes = set(filter(None, study.modalities_in_study.split("\\")))
    if not codes & (_CT_CODES | _DR_CODES):
        codes |= set(Series.objects.filter(study=study).values_list("modality", flat=True))
    if codes & _CT_CODES:
        return ExamKind.CT
    if codes & _DR_CODES:
        return ExamKind.DR
    classes = set(Instance.objects.filter(series__study=study).values_list("sop_class_uid", flat=True).distinct())
    if classes & _CT_SOP_CLASSES:
        return ExamKind.CT
    if classes & _DR_SOP_CLASSES:
        return ExamKind.DR
    return None


def taken_changes(limit: int = 5000) -> AbstractContextManager[list[ConsultChanged]]:
    """Consults' change feed, for the apps above consults: the oldest changes not yet
    followed, deleted when the `with` block ends without an exception (consults.changes)."""
    return changes.taken(limit)


def open_consult_for_study(study: Study) -> Consult | None:
    """The consult for a study that has become stable, created once; None for a study of
    a kind the county does not read remotely (see exam_kind_for_study), which stays
    archived and viewable.

    Its arrival time is when the last image of the study arrived (Study.last_received_at):
    the moment the images were complete at the county, which is what the turnaround
    figures count from; the stability delay is the platform's own, not the township's."""
    existing = Consult.objects.filter(study=study).first()
    if existing is not None:
        return existing
    kind = exam_kind_for_study(study)
    if kind is None:
        logger.info(
            "study %s (%s) archived without a consult: not a kind read remotely",
            study.study_uid,
            study.modalities_in_study or "no modality",
        )
        return None
    arrived_at = study.last_received_at or study.arrived_at or timezone.now()
    try:
        with transaction.atomic():
            # The order the township registered, if the study is one: its priority, history,
            # question and body parts (the ledger counts the parts ordered).
            order = order_for_study(study)
            details: dict[str, object] = {"body_parts": 1, "priority": Priority.ROUTINE}
            if order is not None:
                parts = list(order.body_parts.all())
                details = {
                    "body_parts": max(1, len(parts)),
                    "body_part_names": body_part_names(parts)[:128],
                    "priority": order.priority,
                    "clinical_history": order.clinical_history,
                    "question": order.question,
                }
            consult = Consult(
                study=study,
                facility=study.facility,
                modality=study.modality,
                kind=kind,
                exam_date=study.study_date or timezone.localdate(arrived_at),
                arrived_at=arrived_at,
                **details,
            )
            # The time limit is fixed now, with the series (and their body parts) stored.
            consult.due_at = due_at_for(consult)
            consult.save()
            changes.publish(consult, changes.Change.CREATED)
            audit(
                "consults.consult.created",
                obj=consult,
                facility=study.facility,
                study_uid=study.study_uid,
                kind=consult.kind,
                instances=study.number_of_instances,
                order=order.accession_number if order is not None else "",
            )
    except IntegrityError:
        # A concurrent sweep opened it first (Consult.study is one-to-one).
        return Consult.objects.get(study=study)
    logger.info("consult %s opened for study %s (%s)", consult.uuid, study.study_uid, consult.kind)
    # Offer it to a reader on duty as soon as it is committed; without one on duty, or
    # with the broker down, it waits in the shared worklist and the per-minute check tries again.
    handoff.slots.assign_consult(consult.pk)
    return consult


def request_consult(
    study: Study,
    user: User,
    *,
    clinical_history: str = "",
    body_parts: int = 1,
    body_part_names: str = "",
    priority: str = Priority.ROUTINE,
    question: str = "",
    now: datetime | None = None,
) -> Consult:
    """A technologist of the township asks for a reading of a stored study from the web page,
    with the request's details, without waiting for the study to be declared stable.

    When the stability sweep reaches the study later it finds this consult and leaves it."""
    if not is_technologist_of(user, study.facility_id):
        raise NotAllowed(_("只有申请机构的技师可以申请会诊。"))
    check_request(priority=priority, body_parts=body_parts)
    kind = exam_kind_for_study(study)
    if kind is None:
        raise WorkflowError(
            _("县医院只远程诊断 CT 和 DR 检查；此检查（%(modality)s）已归档，可在影像浏览器中查看。")
            % {"modality": study.modalities_in_study or "—"}
        )
    now = now or timezone.now()
    # The newest instance's arrival, not the stored last_received_at, which the sweep's fold
    # moves once a second: a study still arriving is asked for before its last fold.
    arrived_at = min(last_received(study) or study.arrived_at or now, now)
    try:
        with transaction.atomic():
            if Consult.objects.filter(study=study).exists():
                raise WorkflowError(_("该检查已有会诊申请。"))
            # Linked now, so the order leaves the worklist; the request's own details stand.
            order_for_study(study)
            consult = Consult(
                study=study,
                facility=study.facility,
                modality=study.modality,
                kind=kind,
                exam_date=study.study_date or timezone.localdate(arrived_at),
                body_parts=body_parts,
                body_part_names=body_part_names.strip(),
                priority=priority,
                clinical_history=clinical_history.strip(),
                question=question.strip(),
                arrived_at=arrived_at,
            )
            consult.due_at = due_at_for(consult)
            consult.save()
            changes.publish(consult, changes.Change.CREATED)
            audit(
                "consults.consult.requested",
                actor=user,
                obj=consult,
                facility=study.facility,
                study_uid=study.study_uid,
                kind=consult.kind,
                priority=priority,
                body_parts=body_parts,
            )
    except IntegrityError:
        # The sweep opened it between the check and the insert (Consult.study is one-to-one).
        raise WorkflowError(_("该检查已有会诊申请。")) from None
    handoff.slots.assign_consult(consult.pk)
    return consult


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def search_consults(
    consults: QuerySet[Consult],
    *,
    q: str = "",
    since: date | None = None,
    until: date | None = None,
    status: str = "",
) -> QuerySet[Consult]:
    """Consults whose patient or exam matches: `q` is a name in characters (吴超, matched
    across the PN separator, 吴^超), pinyin initials (wc), a name in letters, a Patient ID
    or an accession number; the dates bound the exam date, both included."""
    q = " ".join(q.split())
    if q:
        match = Q(study__patient__patient_id__iexact=q) | Q(study__accession_number__iexact=q)
        match |= Q(study__patient__patient_id__istartswith=q)
        if _CJK.search(q):
            # Any PN separators or spaces between the characters typed.
            pattern = r"[\^ ]*".join(re.escape(char) for char in q.replace(" ", ""))
            match |= Q(study__patient__name_ideographic__regex=pattern) | Q(
                study__patient__name_alphabetic__regex=pattern
            )
        else:
            words = [re.escape(word) for word in re.split(r"[\s^]+", q) if word]
            match |= Q(study__patient__name_alphabetic__iregex=r"[\^ ]+".join(words))
            if re.fullmatch(r"[A-Za-z]{2,6}", q):
                match |= Q(study__patient__name_initials__startswith=q.lower())
        consults = consults.filter(match)
    if since is not None:
        consults = consults.filter(exam_date__gte=since)
    if until is not None:
        consults = consults.filter(exam_date__lte=until)
    if status in Consult.Status.values:
        consults = consults.filter(status=status)
    return consults
