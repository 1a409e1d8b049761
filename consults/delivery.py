"""Sending a signed report back to the township's own archive as a DICOM Encapsulated PDF
(PS3.3 A.45.1), in the original study, over C-STORE to the modality's address."""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import EncapsulatedPDFStorage  # type: ignore[attr-defined]

from consults import workflow
from consults.models import Consult, Report
from consults.pdf import render_report_pdf
from facilities.services import audit

logger = logging.getLogger("consults")


def encapsulated_pdf(consult: Consult, report: Report, pdf: bytes) -> Dataset:
    """The report as an Encapsulated PDF instance in the consult's study, in a new series."""
    study = consult.study
    now = timezone.localtime()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study.study_uid if study is not None else generate_uid()
    ds.SeriesInstanceUID = generate_uid()
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


def send_report_to_township(consult: Consult) -> bool:
    """C-STORE the signed report to the township modality's address; True when it was stored.

    A modality without host and port gets nothing: the township reads the report on the web."""
    modality = consult.modality
    report = workflow.report_for(consult)
    if report is None or not report.is_signed or modality is None or not modality.host or not modality.port:
        return False
    dataset = encapsulated_pdf(consult, report, render_report_pdf(consult, report))
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    # A task on a worker, or in-process without a broker: an unreachable township must not hang it.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(EncapsulatedPDFStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(modality.host, modality.port, ae_title=modality.ae_title)
    if not assoc.is_established:
        logger.warning("report %s: no association with %s", consult.uuid, modality.ae_title)
        audit("consults.report.send_failed", obj=consult, to=modality.ae_title, reason="association")
        return False
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code != 0x0000:
        audit("consults.report.send_failed", obj=consult, to=modality.ae_title, status=code)
        return False
    audit("consults.report.sent", obj=consult, to=modality.ae_title, sop_instance_uid=dataset.SOPInstanceUID)
    workflow.mark_delivered(consult, channel="dicom")
    return True
