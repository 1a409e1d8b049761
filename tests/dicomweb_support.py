"""Test data for the DICOMweb tests: a small archive made through the real ingest service
(two townships, CT and DR studies, a compressed multi-frame instance, a DX with a VOI LUT
Sequence), consults opened for them, and tokens for DICOMweb clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, JPEG2000Lossless, generate_uid

from cloudpacs.services import ingest_instance
from consults.services import open_consult_for_study
from facilities.models import ApiToken, ExamKind, Facility, Modality, User
from tests.factories import make_dataset, make_modality, write_dataset


def ingest(ds: Dataset, modality: Modality, directory: Path) -> Any:
    directory.mkdir(parents=True, exist_ok=True)
    path = write_dataset(ds, directory / f"{ds.SOPInstanceUID}.dcm")
    return ingest_instance(
        path,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        modality=modality,
    ).instance


def voi_lut_dx(**fields: Any) -> Dataset:
    """A DX whose VOI LUT Sequence is a gamma curve (not a straight window), with a
    window in the dataset as well that a correct renderer must not use."""
    rows, columns = 200, 256
    ds = make_dataset(
        sop_class_uid=DigitalXRayImageStorageForPresentation,
        modality="DX",
        rows=rows,
        columns=columns,
        **fields,
    )
    yy, xx = np.mgrid[0:rows, 0:columns]
    pixels = ((xx * 16 + yy * 3) % 4096).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    del ds.RescaleIntercept
    del ds.RescaleSlope
    ds.WindowCenter = 3000
    ds.WindowWidth = 200
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTExplanation = "GAMMA"
    item.LUTData = [round(4095 * (value / 4095) ** 0.5) for value in range(4096)]
    ds.VOILUTSequence = [item]
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    return ds


def compressed_ct(**fields: Any) -> Dataset:
    """A two-frame CT image stored as JPEG 2000 lossless, as some consoles send."""
    ds = make_dataset(rows=64, columns=64, NumberOfFrames=2, **fields)
    first = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 3) % 4096
    second = (4095 - first).astype(np.uint16)
    ds.PixelData = np.stack([first, second]).tobytes()
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    return ds


@dataclass
class Archive:
    township: Facility
    other_township: Facility
    ct: Modality
    dr: Modality
    other_ct: Modality
    # name -> (study uid, series uid, [sop uids])
    studies: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)

    def uids(self, name: str) -> tuple[str, str, str]:
        study, series, instances = self.studies[name]
        return study, series, instances[0]


def build_archive(township: Facility, other_township: Facility, ct: Modality, dr: Modality, tmp: Path) -> Archive:
    other_ct = make_modality(other_township, ExamKind.CT, "PINGLIANG_CT")
    archive = Archive(township, other_township, ct, dr, other_ct)

    def add(name: str, modality: Modality, datasets: list[Dataset], consult: bool = True) -> None:
        instances = [ingest(ds, modality, tmp / name) for ds in datasets]
        study = instances[0].series.study
        archive.studies[name] = (
            study.study_uid,
            instances[0].series.series_uid,
            [i.sop_instance_uid for i in instances],
        )
        archive.datasets[name] = datasets[0]
        if consult:
            study.refresh_from_db()
            open_consult_for_study(study)

    study_uid, series_uid = generate_uid(), generate_uid()
    add(
        "zhang_ct",
        ct,
        [
            make_dataset(
                study_uid=study_uid,
                series_uid=series_uid,
                patient_id="P0001",
                patient_name="Zhang^San=张^三",
                character_set="ISO_IR 192",
                instance_number=number,
                study_date=date(2025, 9, 1),
                AccessionNumber="ACC001",
                StudyDescription="头颅平扫",
            )
            for number in (1, 2, 3)
        ],
    )
    add(
        "li_dx",
        dr,
        [
            voi_lut_dx(
                patient_id="P0002",
                patient_name="Li^Si=李^四",
                character_set="ISO_IR 192",
                study_date=date(2025, 10, 15),
                AccessionNumber="ACC002",
            )
        ],
    )
    add(
        "wang_j2k",
        ct,
        [
            compressed_ct(
                patient_id="P0003",
                patient_name="Wang^Wu=王^五",
                character_set="ISO_IR 192",
                study_date=date(2025, 8, 20),
                AccessionNumber="ACC003",
            )
        ],
    )
    add(
        "other_zhang",
        other_ct,
        [
            make_dataset(
                patient_id="P0001",
                patient_name="Zhang^Si=张^四",
                character_set="ISO_IR 192",
                study_date=date(2025, 9, 2),
                AccessionNumber="ACC004",
            )
        ],
    )
    return archive


def token_for(user: User, scope: str = ApiToken.Scope.WRITE) -> str:
    """A new API token's secret (facilities.models.ApiToken, through knox)."""
    return ApiToken.objects.create(user, name="test", scope=scope)[1]


def client_for(live_server: Any, user: User, scheme: str = "Token") -> DICOMwebClient:
    return DICOMwebClient(url=live_server.url + "/dicomweb", headers={"Authorization": f"{scheme} {token_for(user)}"})
