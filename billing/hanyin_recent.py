"""The demo's recent studies: a handful with real (generated) images, so that the viewer,
the worklist and the reading page have something to show.

They come in as a township's would: the technologist registers the order, the console
sends the images with the order's accession number and Study Instance UID (through the
archive's ingest service, as the receiver does), the study becomes stable and its
consult opens, and the roster gives it to a reader on duty. None is signed: the ledger
holds the paper's history only. The images are simple phantoms drawn with numpy, not
anyone's anatomy."""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from billing import hanyin_people
from cloudpacs.models import BodyPart, Instance, Order
from cloudpacs.services import claim_stable_studies, ingest_instance, register_order, store_study_metadata
from consults.models import Consult
from consults.services import open_consult_for_study
from facilities.models import ExamKind, Facility, Modality, User

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CT_SLICES = 24
CT_SIZE = 256
DR_SIZE = 1024


@dataclass(frozen=True)
class Recent:
    township: str
    kind: str
    part: str
    priority: str
    history: str
    question: str = ""


RECENT: tuple[Recent, ...] = (
    Recent("XUANWO", ExamKind.CT, "HEAD", "emergency", "突发头痛、呕吐 2 小时，左侧肢体无力。", "颅内出血？"),
    Recent("JIANCHI", ExamKind.CT, "CHEST", "routine", "咳嗽、咳痰 1 个月，吸烟 30 年。"),
    Recent("PINGLIANG", ExamKind.DR, "CHEST", "routine", "咳嗽 1 周，发热 2 天。"),
    Recent("LONGYA", ExamKind.DR, "KNEE", "routine", "右膝关节疼痛半年，上下楼加重。"),
    Recent("HANYANG", ExamKind.DR, "LSPINE", "urgent", "弯腰搬物后腰痛 3 天。"),
    Recent("JIANCHI", ExamKind.DR, "CHEST", "routine", "体检。"),
)


def _ellipse(rows: np.ndarray, columns: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return np.asarray(((columns - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 < 1, dtype=bool)


def ct_slice(part: str, number: int, bleed: bool) -> np.ndarray:
    """One axial slice in Hounsfield units: a head (skull, brain, ventricles) or a chest
    (body, lungs, spine, heart); slices further up are smaller."""
    size = CT_SIZE
    rows, columns = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), -1000.0)
    shrink = 1 - 0.012 * number
    if part == "HEAD":
        image[_ellipse(rows, columns, 0.5, 0.5, 0.36 * shrink, 0.44 * shrink)] = 1000
        image[_ellipse(rows, columns, 0.5, 0.5, 0.33 * shrink, 0.41 * shrink)] = 34
        for cx in (0.45, 0.55):
            image[_ellipse(rows, columns, cx, 0.48, 0.03, 0.11 * shrink)] = 6
        if bleed and 8 <= number <= 15:
            image[_ellipse(rows, columns, 0.62, 0.52, 0.07, 0.05)] = 66
    else:
        image[_ellipse(rows, columns, 0.5, 0.52, 0.46, 0.36)] = 40
        for cx in (0.3, 0.7):
            image[_ellipse(rows, columns, cx, 0.48, 0.16, 0.24 - number * 0.004)] = -820
        image[_ellipse(rows, columns, 0.5, 0.8, 0.05, 0.05)] = 700
        image[_ellipse(rows, columns, 0.55, 0.55, 0.12, 0.1)] = 45
        if number == 12:
            image[_ellipse(rows, columns, 0.25, 0.4, 0.012, 0.012)] = 30  # a small nodule
    noise = np.random.default_rng(number).normal(0, 6, (size, size))
    return image + noise


def dr_image(part: str) -> np.ndarray:
    """A projection radiograph's pixel values (0-4095, brighter is denser)."""
    size = DR_SIZE
    rows, columns = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 300.0)
    if part == "CHEST":
        image[_ellipse(rows, columns, 0.5, 0.55, 0.42, 0.45)] = 2200
        for cx in (0.32, 0.68):
            image[_ellipse(rows, columns, cx, 0.5, 0.15, 0.3)] = 900
        image[_ellipse(rows, columns, 0.56, 0.62, 0.14, 0.13)] = 2400
        for k in range(8):
            y = 0.28 + k * 0.065
            band = np.abs(rows - y - 0.05 * np.abs(columns - 0.5)) < 0.008
            image[band & _ellipse(rows, columns, 0.5, 0.55, 0.4, 0.42)] += 500
    elif part == "KNEE":
        image[np.abs(columns - 0.5) < 0.22] = 1800
        image[(np.abs(columns - 0.5) < 0.11) & (rows < 0.47)] = 3300
        image[(np.abs(columns - 0.5) < 0.12) & (rows > 0.53)] = 3300
        image[(np.abs(columns - 0.5) < 0.15) & (np.abs(rows - 0.49) < 0.035)] = 3000
    else:  # a lumbar spine, front view
        image[np.abs(columns - 0.5) < 0.35] = 1600
        for k in range(5):
            top = 0.12 + k * 0.16
            image[(np.abs(columns - 0.5) < 0.09) & (rows > top) & (rows < top + 0.12)] = 3200
    noise = np.random.default_rng(7).normal(0, 30, (size, size))
    return np.clip(image + noise, 0, 4095)


def _dataset(order: Order, patient: hanyin_people.PatientDraft, series_uid: str, number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE if order.kind == ExamKind.CT else DX_IMAGE_FOR_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = order.study_instance_uid
    ds.SeriesInstanceUID = series_uid
    ds.AccessionNumber = order.accession_number
    ds.PatientID = order.patient_id
    ds.PatientName = patient.name
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    now = timezone.localtime()
    ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Modality = "CT" if order.kind == ExamKind.CT else "DX"
    ds.InstitutionName = order.facility.name
    ds.StationName = order.modality.ae_title
    ds.Manufacturer = order.modality.manufacturer
    ds.ManufacturerModelName = order.modality.model_name
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _images(order: Order, part: BodyPart, patient: hanyin_people.PatientDraft, bleed: bool) -> list[Dataset]:
    series_uid = generate_uid()
    datasets = []
    if order.kind == ExamKind.CT:
        head = part.code == "HEAD"
        for number in range(1, CT_SLICES + 1):
            ds = _dataset(order, patient, series_uid, number)
            ds.SeriesDescription = f"{part.name_zh} 平扫 5mm"
            ds.BodyPartExamined = part.dicom_value_list[0]
            ds.Rows = ds.Columns = CT_SIZE
            ds.PixelSpacing = [0.9, 0.9] if head else [1.4, 1.4]
            ds.SliceThickness = 5
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-115, -115, 5.0 * number]
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.WindowCenter, ds.WindowWidth = (40, 80) if head else (-600, 1500)
            pixels = np.clip(ct_slice(part.code, number, bleed) + 1024, 0, 4095)
            ds.PixelData = pixels.astype(np.uint16).tobytes()
            datasets.append(ds)
    else:
        ds = _dataset(order, patient, series_uid, 1)
        ds.SeriesDescription = f"{part.name_zh} 正位"
        ds.BodyPartExamined = part.dicom_value_list[0]
        ds.ViewPosition = "PA" if part.code == "CHEST" else "AP"
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.Rows = ds.Columns = DR_SIZE
        ds.ImagerPixelSpacing = [0.4, 0.4]
        ds.WindowCenter, ds.WindowWidth = 2000, 4000
        ds.PixelData = dr_image(part.code).astype(np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def has_recent_studies(townships: list[Facility]) -> bool:
    # An instance, not a study's counter: those of a push the sweep has not counted yet count.
    return Instance.objects.filter(series__study__facility__in=townships).exists()


def ensure_recent_studies(townships: dict[str, Facility], technologists: dict[int, User]) -> list[Consult]:
    """Send the RECENT studies in, unless the townships have studies with images already.
    Returns the consults opened; the roster gives them to readers once committed."""
    if has_recent_studies(list(townships.values())):
        return []
    rng = random.Random("hanyin-recent")
    today = timezone.localdate()
    consults: list[Consult] = []
    with tempfile.TemporaryDirectory(prefix="hanyin-recent-") as folder:
        for number, recent in enumerate(RECENT, start=1):
            facility = townships[recent.township]
            modality = Modality.objects.get(facility=facility, kind=recent.kind)
            part = BodyPart.objects.get(code=recent.part)
            patient = hanyin_people.invent_patient(rng, f"{recent.township[:2]}R{number:05d}", part.code, today)
            order = register_order(
                technologists[facility.pk],
                modality=modality,
                patient_id=patient.patient_id,
                patient_name=patient.name_ideographic.replace("^", ""),
                patient_name_pinyin=patient.name_alphabetic,
                patient_sex=patient.sex,
                patient_birth_date=patient.birth_date,
                body_parts=[part],
                scheduled_at=timezone.now() - timedelta(minutes=10),
                priority=recent.priority,
                clinical_history=recent.history,
                question=recent.question,
            )
            for ds in _images(order, part, patient, bleed=recent.priority == "emergency"):
                path = Path(folder) / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(path, enforce_file_format=True)
                ingest_instance(
                    path,
                    transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                    sop_class_uid=ds.SOPClassUID,
                    sop_instance_uid=ds.SOPInstanceUID,
                    modality=modality,
                )
    # The studies are complete: what the stability sweep does once they have been quiet.
    later = timezone.now() + timedelta(seconds=settings.STUDY_STABLE_SECONDS + 1)
    studies = claim_stable_studies(later, settings.STUDY_STABLE_SECONDS, limit=len(RECENT) + 50)
    for study in studies:
        consult = open_consult_for_study(study)
        if consult is not None:
            consults.append(consult)
    store_study_metadata([s.pk for s in studies])
    return consults
