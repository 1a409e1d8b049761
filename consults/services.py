"""Services of the consults app: the workflow from a stable study to a signed report."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from cloudpacs.models import Study
from consults.models import Consult, Priority
from facilities.models import ExamKind
from facilities.services import audit

logger = logging.getLogger("consults")

# DICOM Modality codes that the ledger counts as DR (digital radiography).
_DR_CODES = {"CR", "DX", "DR", "RG"}


def exam_kind_for_study(study: Study) -> str:
    """CT or DR: from the modalities in the study, else the sending machine's kind."""
    codes = set(filter(None, study.modalities_in_study.split("\\")))
    if "CT" in codes:
        return ExamKind.CT
    if codes & _DR_CODES:
        return ExamKind.DR
    if study.modality is not None:
        return study.modality.kind
    return ExamKind.DR


def open_consult_for_study(study: Study) -> Consult:
    """The consult for a study that has become stable, created once.

    Its arrival time is when the last image of the study arrived (Study.last_received_at):
    the moment the images were complete at the county, which is what the turnaround
    figures count from; the stability delay is the platform's own, not the township's."""
    existing = Consult.objects.filter(study=study).first()
    if existing is not None:
        return existing
    arrived_at = study.last_received_at or study.arrived_at or timezone.now()
    try:
        with transaction.atomic():
            consult = Consult.objects.create(
                study=study,
                facility=study.facility,
                modality=study.modality,
                kind=exam_kind_for_study(study),
                exam_date=study.study_date or timezone.localdate(arrived_at),
                body_parts=1,
                priority=Priority.ROUTINE,
                arrived_at=arrived_at,
            )
            audit(
                "consults.consult.created",
                obj=consult,
                facility=study.facility,
                study_uid=study.study_uid,
                kind=consult.kind,
                instances=study.number_of_instances,
            )
    except IntegrityError:
        # A concurrent sweep opened it first (Consult.study is one-to-one).
        return Consult.objects.get(study=study)
    logger.info("consult %s opened for study %s (%s)", consult.uuid, study.study_uid, consult.kind)
    # Offer it to a reader on duty as soon as it is committed; without one on duty it
    # waits in the shared worklist and the per-minute check tries again.
    from consults.tasks import assign_consult  # tasks import this module

    consult_pk = consult.pk
    transaction.on_commit(lambda: assign_consult.delay(consult_pk))
    return consult
