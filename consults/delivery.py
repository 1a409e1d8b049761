"""Sending a signed report back to the township's own archive as a DICOM Encapsulated PDF
(PS3.3 A.45.1), in the original study, over C-STORE to the modality's address.

Signing writes a row in the outbox (ReportDelivery) in its own transaction; `deliver`
makes one attempt at one row, `deliver_due` at every row whose time has come. A worker
runs them when a broker is configured, the ticker's periodic run otherwise: the signing
request never waits for the township's archive."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import EncapsulatedPDFStorage  # type: ignore[attr-defined]

from cloudpacs.services import open_association
from consults import handoff, outbox, workflow
from consults.models import Consult, Report, ReportDelivery
from consults.pdf import render_report_pdf
from consults.rules import Step, require
from facilities.models import User
from facilities.services import audit

logger = logging.getLogger("consults")


def encapsulated_pdf(
    consult: Consult, report: Report, pdf: bytes, *, sop_instance_uid: str = "", series_instance_uid: str = ""
) -> Dataset:
    """The report as an Encapsulated PDF instance in the consult's study, in a series of its own."""
    study = consult.study
    now = timezone.localtime()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study.study_uid if study is not None else generate_uid()
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    if study is not None:
        patient = study.patient
        ds.PatientName = patient.name
        ds.PatientID = patient.patient_id
        ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
        ds.PatientSex = patient.sex[:1] if patient.sex[:1] in {"M", "F", "O"} else ""
        ds.StudyDate = study.study_date.strftime("%Y%m%d") if study.study_date else ""
        ds.StudyTime = study.study_time.strftime("%H%M%S") if study.study_time else ""
        ds.AccessionNumber = study.accession_number
        ds.StudyID = study.study_id
        ds.ReferringPhysicianName = study.referring_physician
    ds.Modality = "DOC"
    ds.SeriesNumber = 9901
    ds.InstanceNumber = 1
    ds.Manufacturer = "Yunying"
    # SC Equipment module (Type 1): a document made on a workstation.
    ds.ConversionType = "WSD"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "医学影像诊断报告"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    # Even length: pad with a NUL, as PS3.5 requires of OB values.
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def backoff(attempts: int) -> timedelta:
    """The wait after the n-th failed attempt: the base delay, doubled each time, at most an hour."""
    return outbox.backoff(attempts, timedelta(seconds=settings.REPORT_DELIVERY_RETRY_SECONDS), timedelta(hours=1))


def _lease() -> timedelta:
    # Longer than any one attempt can last (three network timeouts and the PDF), so a row
    # still marked as sending after this was left by a process that died mid-attempt.
    return timedelta(seconds=3 * settings.REPORT_DELIVERY_TIMEOUT + 60)


def _send(delivery: ReportDelivery, address: outbox.Address) -> str:
    """One C-STORE of the report; an empty string when the archive stored it, else why not."""
    consult = delivery.consult
    report = Report.objects.filter(consult=consult).first()
    if report is None or not report.is_signed:
        return "the report is not signed"
    try:
        pdf = render_report_pdf(consult, report)
    except Exception as error:  # a missing font must not wedge the row in 'sending'
        logger.exception("report %s: the PDF could not be rendered", consult.uuid)
        return f"PDF: {type(error).__name__}: {error}"[:255]
    dataset = encapsulated_pdf(
        consult,
        report,
        pdf,
        sop_instance_uid=delivery.sop_instance_uid,
        series_instance_uid=delivery.series_instance_uid,
    )
    ae_title, host, port = address
    assoc = open_association(
        host,
        port,
        ae_title,
        [(EncapsulatedPDFStorage, ExplicitVRLittleEndian)],
        timeout=settings.REPORT_DELIVERY_TIMEOUT,
    )
    if assoc.is_rejected:
        return f"association rejected by {ae_title}"
    if not assoc.is_established:
        return f"no association with {host}:{port} (refused, aborted or timed out)"
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return "no C-STORE response (aborted or timed out)"
    if code != 0x0000:
        return f"C-STORE status 0x{code:04X}"
    return ""


def deliver(delivery_id: int, now: datetime | None = None, *, skip_reason: str = "") -> str | None:
    """One attempt at one row, if it is due and nobody else is on it: the new status, or
    None when it was not attempted. With `skip_reason` the attempt is counted as failed
    without a connection (its archive just failed for another row of the same run)."""
    now = now or timezone.now()
    if not outbox.claim(ReportDelivery, delivery_id, now, _lease()):
        return None
    delivery = ReportDelivery.objects.select_related(
        "consult__facility", "consult__modality", "consult__study__patient"
    ).get(pk=delivery_id)
    consult = delivery.consult
    address = outbox.address_of(consult)
    if skip_reason:
        error = skip_reason
    elif address is None:
        error = "the modality has no address any more"
    else:
        delivery.destination = outbox.address_label(address)
        error = _send(delivery, address)
    with transaction.atomic():
        fields: dict[str, object] = {"destination": delivery.destination, "claimed_at": None}
        if not error:
            fields.update(status=ReportDelivery.Status.SENT, sent_at=now, last_error="")
        elif delivery.attempts >= settings.REPORT_DELIVERY_MAX_ATTEMPTS:
            fields.update(status=ReportDelivery.Status.FAILED, last_error=error[:255])
        else:
            fields.update(
                status=ReportDelivery.Status.RETRYING,
                last_error=error[:255],
                next_attempt_at=now + backoff(delivery.attempts),
            )
        ReportDelivery.objects.filter(pk=delivery.pk).update(**fields)
        if error:
            logger.warning(
                "report %s: attempt %d to %s failed: %s", consult.uuid, delivery.attempts, delivery.destination, error
            )
            audit(
                "consults.report.send_failed",
                obj=consult,
                to=delivery.destination,
                attempt=delivery.attempts,
                reason=error,
                final=fields["status"] == ReportDelivery.Status.FAILED,
            )
        else:
            audit(
                "consults.report.sent",
                obj=consult,
                to=delivery.destination,
                attempt=delivery.attempts,
                sop_instance_uid=delivery.sop_instance_uid,
            )
            workflow.mark_delivered(consult, channel="dicom", now=now)
    return str(fields["status"])


def deliver_due(now: datetime | None = None, limit: int = 20, budget_seconds: float = 30.0) -> dict[int, str]:
    """An attempt at every row whose time has come, oldest first: {row: new status}.

    Once an archive fails in this run, its other rows are counted as failed without
    dialling it again, so one archive that is down costs one timeout a run, not one a report.
    No new attempt starts after `budget_seconds`: without a broker the ticker runs this
    between the other periodic checks, which must not wait on several dead archives in a row;
    the rest are due again at the next run."""
    now = now or timezone.now()
    started = time.monotonic()
    rows = list(
        ReportDelivery.objects.filter(outbox.due(ReportDelivery, now, _lease()))
        .order_by("next_attempt_at", "id")
        .values_list("pk", "consult__modality__host", "consult__modality__port")[:limit]
    )
    failed: dict[tuple[str, int | None], str] = {}
    outcome: dict[int, str] = {}
    for pk, host, port in rows:
        if time.monotonic() - started > budget_seconds:
            break
        skip = failed.get((host, port), "")
        status = deliver(pk, now, skip_reason=f"not tried: {skip}" if skip else "")
        if status is None:
            continue
        outcome[pk] = status
        if status != ReportDelivery.Status.SENT and not skip:
            failed[(host, port)] = ReportDelivery.objects.values_list("last_error", flat=True).get(pk=pk)
    return outcome


def retry(delivery: ReportDelivery, user: User, now: datetime | None = None) -> bool:
    """Send a report whose attempts ran out once more, from the first delay on. Raises the
    rule's refusal (consults.rules) for a user who may not, or a row that has not failed."""
    now = now or timezone.now()
    require(Step.RETRY_DELIVERY, user, delivery.consult, now)
    updated = ReportDelivery.objects.filter(pk=delivery.pk, status=ReportDelivery.Status.FAILED).update(
        status=ReportDelivery.Status.PENDING, attempts=0, next_attempt_at=now
    )
    if updated:
        audit("consults.report.send_retried", actor=user, obj=delivery.consult, to=delivery.destination)
        handoff.slots.deliver_report(delivery.pk)
    return bool(updated)
