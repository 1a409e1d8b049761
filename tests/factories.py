"""Small factories for tests: facilities, modalities, users, and DICOM datasets."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from facilities.models import ExamKind, Facility, Modality, User

_counter = itertools.count(1)

PASSWORD = "correct-horse-battery-42"


def make_facility(code: str | None = None, *, township: bool = True, **fields: Any) -> Facility:
    n = next(_counter)
    code = code or f"TOWN{n}"
    defaults: dict[str, Any] = {
        "name": f"{code}镇卫生院" if township else f"{code}县人民医院",
        "short_name": code,
        "pinyin": code.capitalize(),
        "kind": Facility.Kind.TOWNSHIP_CENTRE if township else Facility.Kind.COUNTY_HOSPITAL,
        "level": Facility.Level.FIRST if township else Facility.Level.SECOND,
    }
    defaults.update(fields)
    return Facility.objects.create(code=code, **defaults)


def make_modality(facility: Facility, kind: str = ExamKind.CT, ae_title: str | None = None, **fields: Any) -> Modality:
    ae_title = ae_title or f"{facility.code}_{kind}"[:16].upper()
    return Modality.objects.create(facility=facility, kind=kind, ae_title=ae_title, **fields)


def make_user(role: str, facility: Facility | None = None, username: str | None = None, **fields: Any) -> User:
    n = next(_counter)
    username = username or f"{role}{n}"
    if role == User.Role.RADIOLOGIST:
        fields.setdefault("reads_ct", True)
        fields.setdefault("reads_dr", True)
    user = User(username=username, role=role, facility=facility, **fields)
    user.set_password(PASSWORD)
    user.save()
    return user


# The personas of conftest.py's fixtures (county, township, ct_modality, technologist, ...),
# as functions, for data that a module builds once (conftest's `module_transaction`).


def make_county() -> Facility:
    return make_facility(
        "COUNTY",
        township=False,
        name="汉阴县人民医院",
        short_name="县医院",
        pinyin="Hanyin",
        name_en="Hanyin County People's Hospital",
    )


def make_township() -> Facility:
    return make_facility(
        "XUANWO",
        name="漩涡镇中心卫生院",
        short_name="漩涡",
        pinyin="Xuanwo",
        name_en="Xuanwo Central Township Health Centre",
    )


def make_other_township() -> Facility:
    return make_facility(
        "PINGLIANG",
        name="平梁镇卫生院",
        short_name="平梁",
        pinyin="Pingliang",
        name_en="Pingliang Township Health Centre",
    )


def make_ct_modality(township: Facility) -> Modality:
    return make_modality(township, ExamKind.CT, "XUANWO_CT", manufacturer="UIH", model_name="uCT 528")


def make_technologist(township: Facility) -> User:
    return make_user(User.Role.TECHNOLOGIST, township, username="tech_xuanwo", display_name="漩涡技师")


def make_outsider(other_township: Facility) -> User:
    return make_user(User.Role.TECHNOLOGIST, other_township, username="tech_pingliang", display_name="平梁技师")


def make_radiologist(county: Facility) -> User:
    return make_user(User.Role.RADIOLOGIST, county, username="dr_li", display_name="李医生", is_senior=True)


def make_administrator(county: Facility) -> User:
    return make_user(User.Role.ADMINISTRATOR, county, username="admin_wang", display_name="王管理员")


def make_dataset(
    *,
    sop_class_uid: str = CTImageStorage,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    patient_id: str = "P0001",
    patient_name: str = "Zhang^San",
    character_set: str | None = None,
    modality: str = "CT",
    rows: int = 64,
    columns: int = 64,
    instance_number: int = 1,
    study_date: date = date(2025, 9, 1),
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    **extra: Any,
) -> Dataset:
    """A small but complete image dataset with a file meta header, ready to send or save."""
    ds = Dataset()
    if character_set:
        ds.SpecificCharacterSet = character_set
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "M"
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A" + ds.SOPInstanceUID[-8:]
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.InstitutionName = "Test Township Health Centre"
    ds.StationName = "STATION1"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) * 7 + instance_number) % 4096
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax_uid
    return ds


def write_dataset(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def ingest(ds: Dataset, modality: Modality, directory: Path) -> Any:
    """`ds` written in `directory` and indexed as the receiver indexes a received file:
    ingest_instance's result."""
    from cloudpacs import services

    path = write_dataset(ds, directory / f"{ds.SOPInstanceUID}.dcm")
    return services.ingest_instance(
        path,
        transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        modality=modality,
    )


def make_study(facility: Facility, modality: Modality | None = None, *, patient: Any = None, **fields: Any) -> Any:
    """An archived study (index rows only, no files) with one series, for consult tests."""
    from cloudpacs.models import Patient, Series, Study

    n = next(_counter)
    if patient is None:
        patient = Patient.objects.create(
            facility=facility, patient_id=f"P{n:05d}", name="张三", name_ideographic="张三", sex="M"
        )
    fields.setdefault("study_date", date(2025, 9, 1))
    fields.setdefault("description", "胸部平扫")
    fields.setdefault("status", Study.Status.ARRIVED)
    study = Study.objects.create(
        study_uid=generate_uid(),
        patient=patient,
        facility=facility,
        modality=modality,
        number_of_series=1,
        number_of_instances=1,
        **fields,
    )
    Series.objects.create(
        series_uid=generate_uid(), study=study, modality=modality.kind if modality else "CT", series_number=1
    )
    return study


def make_consult(facility: Facility, study: Any = None, **fields: Any) -> Any:
    """A consult as the receiver opens it: arrived, unassigned, routine unless told."""
    from django.utils import timezone

    from consults.models import Consult

    fields.setdefault("kind", study.modality.kind if study is not None and study.modality else ExamKind.CT)
    fields.setdefault("exam_date", date(2025, 9, 1))
    fields.setdefault("arrived_at", timezone.now())
    fields.setdefault("modality", study.modality if study is not None else None)
    return Consult.objects.create(facility=facility, study=study, **fields)


def make_shift(radiologist: User, starts_at: Any, hours: float = 8, *, is_lead: bool = False) -> Any:
    from datetime import timedelta

    from facilities.models import RosterShift

    return RosterShift.objects.create(
        radiologist=radiologist, starts_at=starts_at, ends_at=starts_at + timedelta(hours=hours), is_lead=is_lead
    )
