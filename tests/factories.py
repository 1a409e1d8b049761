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
