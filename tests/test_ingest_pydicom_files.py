"""pydicom's own test files (explicit and implicit VR, big endian, deflated, encapsulated,
sequences, private tags, specific character sets, files that are truncated or padded)
through ingest_instance one after another, as a modality would send them: what each
answered and every index row they left are pinned in tests/data/pydicom_files_index.json,
written from the receiver before its read of the tags was made cheaper. A change to the
ingest path that stores, refuses or indexes any of them differently fails here.

To write the pinned file again (only for a change meant to index differently):
`PIN_PYDICOM_FILES_INDEX=1 pytest -n 0 tests/test_ingest_pydicom_files.py`."""

from __future__ import annotations

import datetime
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom import dcmread

from cloudpacs import counts, services, storage
from cloudpacs.models import IngestConflict, Instance, InstanceVersion, Patient, PatientIdentifier, Series, Study

DATA = Path(pydicom.data.__file__).parent
FILES = sorted([*(DATA / "test_files").glob("*.dcm"), *(DATA / "charset_files").glob("*.dcm")])
PINNED = Path(__file__).parent / "data" / "pydicom_files_index.json"

# Each model's rows, with its foreign keys by the natural key of the row they point at.
MODELS: list[tuple[Any, list[str]]] = [
    (Patient, []),
    (PatientIdentifier, ["patient__patient_id"]),
    (Study, ["patient__patient_id"]),
    (Series, ["study__study_uid"]),
    (Instance, ["series__series_uid"]),
    (InstanceVersion, ["instance__sop_instance_uid"]),
    (IngestConflict, []),
]


def request_values(path: Path) -> tuple[str, str, str] | None:
    """(transfer syntax, SOP Class, SOP Instance) as a sending modality would put them in
    its request, or None for a file that says none of them."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
        values = (
            ds.file_meta.get("TransferSyntaxUID"),
            ds.get("SOPClassUID"),
            ds.get("SOPInstanceUID"),
        )
    except Exception:
        return None
    if not all(values):
        return None
    return str(values[0]), str(values[1]), str(values[2])


def plain(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


def index_rows() -> dict[str, list[dict[str, Any]]]:
    """Every row of the index's models, without primary keys, foreign key ids, UUIDs and
    times of day the rows were written."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for model, natural in MODELS:
        fields = [
            field.attname
            for field in model._meta.concrete_fields
            if not field.primary_key
            and not field.is_relation
            and not field.name.endswith("_at")
            and field.name not in {"at", "uuid", "counted_through"}
        ]
        found = []
        for row in model.objects.values(*fields, *natural):
            found.append(
                {name: plain(value) for name, value in sorted(row.items()) if not isinstance(value, uuid.UUID)}
            )
        rows[model.__name__] = sorted(found, key=lambda row: json.dumps(row, sort_keys=True, ensure_ascii=False))
    return rows


def ingest_every_file(modality) -> dict[str, Any]:
    answers: dict[str, str] = {}
    for path in FILES:
        name = f"{path.parent.name}/{path.name}"
        values = request_values(path)
        if values is None:
            answers[name] = "no request values"
            continue
        transfer_syntax, sop_class, sop_instance = values
        try:
            result = services.ingest_instance(
                path,
                transfer_syntax_uid=transfer_syntax,
                sop_class_uid=sop_class,
                sop_instance_uid=sop_instance,
                modality=modality,
            )
        except services.IdentityConflict as conflict:
            answers[name] = f"{type(conflict).__name__} 0x{conflict.status:04X}"
        except services.IngestError as refused:
            answers[name] = type(refused).__name__
        else:
            answers[name] = str(result.outcome)
    # The index as the sweep leaves it: the instances counted into their series and studies.
    counts.fold()
    return {"answers": answers, "rows": index_rows()}


@pytest.mark.django_db
def test_pydicoms_files_are_answered_and_indexed_as_pinned(ct_modality):
    found = ingest_every_file(ct_modality)
    if os.environ.get("PIN_PYDICOM_FILES_INDEX"):
        PINNED.parent.mkdir(exist_ok=True)
        PINNED.write_text(json.dumps(found, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    assert found["answers"] == pinned["answers"]
    for model in pinned["rows"]:
        assert found["rows"][model] == pinned["rows"][model], model
    # Not an empty comparison: most of them are stored.
    assert sum(answer == "stored" for answer in found["answers"].values()) > 40


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_the_study_uid_read_ahead_is_pydicoms_or_none(path):
    """The key guessed before the tags are converted: from the dataset as read from the
    file staged for ingest, the same Study Instance UID as pydicom's dcmread gives for the
    whole file, or none (then nothing is done ahead)."""
    values = request_values(path)
    if values is None:
        return
    transfer_syntax, sop_class, sop_instance = values
    staged = storage.stage(
        path, sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax_uid=transfer_syntax
    )
    try:
        try:
            read = services._read_dataset(staged.path, staged.dataset_offset, transfer_syntax, sop_instance)
        except services.UnreadableDataset:
            read = None
        ahead = services._study_uid_ahead(read) if read is not None else None
        try:
            value = dcmread(staged.path).get("StudyInstanceUID")
        except Exception:
            value = None
        whole = str(value).strip() if value is not None else ""
        if ahead is not None:
            assert ahead == whole
        if ahead is None and whole and read is not None:
            # Only when the dataset has no such element at its top level, or no ASCII one.
            raw = read.get_item(0x0020000D, keep_deferred=True)
            if raw is not None:
                with pytest.raises(UnicodeDecodeError):
                    raw.value.decode("ascii")
    finally:
        storage.discard(staged)
