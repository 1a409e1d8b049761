"""Services of the archive: storing a received instance, and deciding when a study is stable.

`ingest_instance` is the one way an image enters the archive. It writes the dataset as
received (never decoded and re-encoded), fsyncs it, gives it its final name, and only
then indexes it in one transaction; the DICOM receiver answers Success only after that.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from django.db import IntegrityError, transaction
from django.db.models import Case, F, QuerySet, Value, When
from django.utils import timezone
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from pydicom.valuerep import PersonName

from cloudpacs import storage
from cloudpacs.dicomweb.json import metadata_document, with_instance_url
from cloudpacs.models import Instance, InstanceMetadata, Patient, PerformedProcedureStep, Series, Study
from cloudpacs.orders import (  # noqa: F401 (the archive's services, as other apps call them)
    body_part_for,
    body_part_name,
    body_part_names,
    body_parts_for_kind,
    order_for_study,
    performed_studies_ready,
    settle_performed_steps,
)
from cloudpacs.personname import name_initials
from facilities.models import Modality

logger = logging.getLogger("cloudpacs.ingest")

# Pixel Data, Float Pixel Data and Double Float Pixel Data, with the bits of a sample of
# the float ones (Bits Allocated says for Pixel Data).
PIXEL_DATA_TAGS: list[tuple[Any, int | None]] = [
    (Tag(0x7FE0, 0x0010), None),
    (Tag(0x7FE0, 0x0008), 32),
    (Tag(0x7FE0, 0x0009), 64),
]
PIXEL_DATA_TAG_SET = {tag for tag, _ in PIXEL_DATA_TAGS}
UNDEFINED_LENGTH = 0xFFFFFFFF
ESC_ISO_IR_58 = b"\x1b$)A"
ESC_ASCII = b"\x1b(B"
PERSON_NAME_TAGS = ["PatientName", "ReferringPhysicianName"]

# What the index reads from a received file; every other element is decoded once, to
# refuse one that cannot be, and bulk values are skipped.
INDEXED_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "InstitutionName",
    "StationName",
    "Manufacturer",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
]


class IngestOutcome(StrEnum):
    STORED = "stored"
    # The same SOP Instance UID with the same content: answered as a success, kept once.
    DUPLICATE = "duplicate"
    # The same SOP Instance UID with different content: the first one is kept.
    CONFLICT = "conflict"


@dataclass(frozen=True)
class IngestResult:
    outcome: IngestOutcome
    instance: Instance
    study_created: bool = False


class IngestError(Exception):
    """A received dataset that was not stored; the message says why, for the log."""


class UnreadableDataset(IngestError):
    """The payload cannot be parsed as a DICOM dataset in its transfer syntax."""


class MissingIdentifier(IngestError):
    """A Study, Series or SOP Instance UID is missing or unusable."""


class SOPClassMismatch(IngestError):
    """The dataset's SOP Class is not the one its presentation context was negotiated for."""


class OutOfResources(IngestError):
    """The store is full or the index is unavailable; the sender may retry later."""


@dataclass(frozen=True)
class IndexedTags:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    # The indexed attributes' values, each read once.
    values: dict[str, Any]
    # (whole, alphabetic, ideographic, phonetic) of each person name
    names: dict[str, tuple[str, str, str, str]]


def ingest_instance(
    source: Path | BinaryIO,
    *,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: Modality,
    adopt: bool = False,
    sha256: str | None = None,
) -> IngestResult:
    """Store one received dataset and index it.

    `source` is a path to the Part 10 file pynetdicom wrote while receiving, or a stream
    of the bare dataset bytes; `transfer_syntax_uid` is the accepted presentation
    context's; `sop_class_uid` and `sop_instance_uid` come from the C-STORE request
    (the class is the context's abstract syntax). With `adopt`, a source file on the
    store's filesystem is moved into the store instead of copied; `sha256`, when the
    receiver hashed the dataset bytes as they arrived, spares reading the moved file again. Raises an IngestError
    subclass when nothing was stored."""
    try:
        staged = storage.stage(
            source,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            source_ae=modality.ae_title,
            adopt=adopt,
            sha256=sha256,
        )
    except OSError as exc:
        if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
            raise OutOfResources(f"no space left in the image store: {exc}") from exc
        raise
    try:
        tags = _read_indexed_tags(staged.path, sop_class_uid, sop_instance_uid, transfer_syntax_uid)
        key = storage.key_for(tags.study_uid, tags.sop_instance_uid, staged.sha256)
        try:
            created = storage.publish(staged, key)
        except OSError as exc:
            # Only a name this call made (a link to the staged file) may go: an existing
            # one may be indexed.
            with contextlib.suppress(OSError):
                if storage.path_for(key).samefile(staged.path):
                    storage.remove_key(key)
            if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
                raise OutOfResources(f"no space left in the image store: {exc}") from exc
            raise
        try:
            instance, study_created = _index(tags, staged, key, transfer_syntax_uid, modality)
        except IntegrityError:
            # This SOP Instance UID is indexed already: a re-send, or another association
            # a moment ago. Which of the two files is kept is decided by the index.
            existing = Instance.objects.filter(sop_instance_uid=tags.sop_instance_uid).first()
            if created and (existing is None or existing.storage_key != key):
                storage.remove_key(key)
            if existing is None:
                raise
            return _repeat(existing, staged.sha256, modality)
        except BaseException:
            if created:
                storage.remove_key(key)
            raise
        return IngestResult(IngestOutcome.STORED, instance, study_created)
    finally:
        storage.discard(staged)


def _repeat(existing: Instance, sha256: str, modality: Modality) -> IngestResult:
    if existing.sha256 == sha256:
        logger.info("instance %s re-sent by %s with identical content", existing.sop_instance_uid, modality.ae_title)
        return IngestResult(IngestOutcome.DUPLICATE, existing)
    logger.warning(
        "instance %s re-sent by %s with different content (sha256 %s, stored %s): keeping the first",
        existing.sop_instance_uid,
        modality.ae_title,
        sha256[:16],
        existing.sha256[:16],
    )
    return IngestResult(IngestOutcome.CONFLICT, existing)


def _check_pixel_data_complete(ds: Dataset, path: Path, transfer_syntax_uid: str) -> None:
    """Refuse pixel data that no viewer could show: encapsulated pixel data must be a run
    of well-formed items ending in its sequence delimiter (wherever it lies: Data Set
    Trailing Padding or Digital Signatures may follow it); native pixel data must be as
    long as its image attributes say. A dataset cut short on the wire fails either check.
    The index never reads pixel data, so neither check reads it into memory."""
    for tag, bits in PIXEL_DATA_TAGS:
        raw: Any = ds.get_item(tag, keep_deferred=True)
        if raw is None:
            continue
        if isinstance(raw, RawDataElement):
            offset, length, undefined = raw.value_tell, raw.length, raw.length == UNDEFINED_LENGTH
        else:  # decoded already: a small value that was not deferred
            value = raw.value
            offset, undefined = raw.file_tell, raw.is_undefined_length
            length = len(value) if isinstance(value, bytes | bytearray) else 0
        if UID(transfer_syntax_uid).is_encapsulated and tag == PIXEL_DATA_TAGS[0][0]:
            if not undefined:
                raise UnreadableDataset(f"encapsulated pixel data has a defined length ({length} bytes)")
            if offset is not None:
                _check_encapsulated(path, offset, transfer_syntax_uid != ExplicitVRBigEndian)
            return
        _check_native_length(ds, length, bits)
        # A deflated file's offsets are in the inflated stream, which pydicom read whole.
        if offset is not None and transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
            size = path.stat().st_size
            if offset + length > size:
                raise UnreadableDataset(
                    f"the pixel data declares {length} bytes but only {size - offset} arrived: the dataset is truncated"
                )
        return


def _check_encapsulated(path: Path, offset: int, little_endian: bool) -> None:
    """Walk the items of encapsulated pixel data (PS3.5 A.4) from the first to the
    sequence delimiter, seeking over each fragment."""
    order = "<" if little_endian else ">"
    size = path.stat().st_size
    items = 0
    with open(path, "rb") as stream:
        stream.seek(offset)
        while True:
            header = stream.read(8)
            if len(header) < 8:
                raise UnreadableDataset(
                    f"the encapsulated pixel data ends after {items} items without its sequence delimiter: "
                    "the dataset is truncated"
                )
            group, element, length = struct.unpack(order + "HHL", header)
            if (group, element) == (0xFFFE, 0xE0DD):
                break
            if (group, element) != (0xFFFE, 0xE000):
                raise UnreadableDataset(
                    f"the encapsulated pixel data has ({group:04X},{element:04X}) where item {items + 1} "
                    "or the sequence delimiter should be"
                )
            if length == UNDEFINED_LENGTH or stream.tell() + length > size:
                raise UnreadableDataset(
                    f"item {items + 1} of the encapsulated pixel data declares {length} bytes, more than arrived: "
                    "the dataset is truncated"
                )
            stream.seek(length, io.SEEK_CUR)
            items += 1
    # The Basic Offset Table (perhaps empty) comes first, then at least one fragment.
    if items < 2:
        raise UnreadableDataset("the encapsulated pixel data has no fragment")


def native_pixel_data_length(ds: Dataset | dict[str, Any], bits_allocated: int | None = None) -> int:
    """The bytes of native pixel data the image attributes describe (PS3.5 8.1.1, 8.2):
    Rows x Columns x Samples per Pixel x Bits Allocated / 8 x Number of Frames, where
    Bits Allocated 1 packs the bits of all frames together, rounded up to whole bytes, and
    YBR_FULL_422 holds two samples per pixel (each pair of pixels shares its Cb and Cr).
    Without the pad byte an odd length is sent with. Raises UnreadableDataset when an
    attribute is missing or not a positive number."""

    def number(keyword: str, default: int | None = None) -> int:
        value = ds.get(keyword)
        if value in (None, "") and default is not None:
            return default
        try:
            result = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UnreadableDataset(f"the image has pixel data but {keyword} is {value!r}") from None
        if result < 1:
            raise UnreadableDataset(f"the image has pixel data but {keyword} is {result}")
        return result

    rows, columns = number("Rows"), number("Columns")
    samples = number("SamplesPerPixel", 1)
    frames = number("NumberOfFrames", 1)
    bits = bits_allocated or number("BitsAllocated")
    if str(ds.get("PhotometricInterpretation") or "").strip() == "YBR_FULL_422":
        samples = 2
    if bits == 1:
        return (rows * columns * samples * frames + 7) // 8
    return rows * columns * samples * frames * ((bits + 7) // 8)


def _check_native_length(ds: Dataset, length: int, bits_allocated: int | None) -> None:
    expected = native_pixel_data_length(ds, bits_allocated)
    if length not in (expected, expected + expected % 2):
        raise UnreadableDataset(
            f"pixel data is {length} bytes, not {expected}: {ds.get('Rows')} rows x {ds.get('Columns')} "
            f"columns x {ds.get('SamplesPerPixel') or 1} samples x {bits_allocated or ds.get('BitsAllocated')} bits "
            f"x {ds.get('NumberOfFrames') or 1} frames, {ds.get('PhotometricInterpretation') or 'no photometric'}"
        )


def _read_indexed_tags(path: Path, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> IndexedTags:
    try:
        # Bulk values are deferred: they are skipped over, never read into memory.
        ds = dcmread(path, defer_size=4096)
        raw_names = {keyword: _raw_bytes(ds, keyword) for keyword in PERSON_NAME_TAGS}
        # Touch every indexed value now, so that a broken element fails here.
        values = {keyword: ds.get(keyword) for keyword in INDEXED_TAGS}
        # And every other one but bulk data: the viewer, WADO metadata and rendering read
        # them later, and an element that cannot be decoded must not be archived.
        _decode_every_element(ds)
    except Exception as exc:
        raise UnreadableDataset(f"cannot parse the dataset: {type(exc).__name__}: {exc}") from exc
    if not len(ds):
        # pydicom keeps nothing (and only warns) when the file ends inside an element of
        # undefined length: encapsulated pixel data that was cut short on the wire.
        raise UnreadableDataset("truncated: the dataset ends inside an element of undefined length")
    written = (ds.file_meta.get("TransferSyntaxUID"), ds.file_meta.get("MediaStorageSOPInstanceUID"))
    if tuple(str(value or "") for value in written) != (transfer_syntax_uid, sop_instance_uid):
        # The payload began with file meta elements of its own, which a reader would take
        # for the header the receiver wrote: DICOM sends none over the network (PS3.7).
        raise UnreadableDataset("the dataset carries file meta elements (group 0002) of its own")
    _check_pixel_data_complete(ds, path, transfer_syntax_uid)

    def uid(keyword: str) -> str:
        value = values.get(keyword)
        text = str(value).strip() if value is not None else ""
        if not text:
            raise MissingIdentifier(f"{keyword} is missing")
        if len(text) > 64 or not all(ch.isascii() and (ch.isalnum() or ch == ".") for ch in text):
            raise MissingIdentifier(f"{keyword} {text[:70]!r} is not a valid UID")
        return text

    dataset_class = uid("SOPClassUID")
    dataset_instance = uid("SOPInstanceUID")
    study_uid = uid("StudyInstanceUID")
    series_uid = uid("SeriesInstanceUID")
    if dataset_class != sop_class_uid:
        raise SOPClassMismatch(f"dataset SOP Class {dataset_class} but presentation context {sop_class_uid}")
    if dataset_instance != sop_instance_uid:
        raise MissingIdentifier(
            f"dataset SOP Instance UID {dataset_instance} differs from the request's {sop_instance_uid}"
        )
    names = {keyword: person_name_groups(ds, keyword, raw_names.get(keyword)) for keyword in PERSON_NAME_TAGS}
    return IndexedTags(dataset_class, dataset_instance, study_uid, series_uid, values, names)


def _decode_every_element(ds: Dataset) -> None:
    """Decode each element's value, in sequences too, except deferred bulk values and
    pixel data (kept raw, for _check_pixel_data_complete to see how it was encoded)."""
    for tag in list(ds.keys()):
        if tag in PIXEL_DATA_TAG_SET:
            continue
        raw: Any = ds.get_item(tag, keep_deferred=True)
        if raw is not None and getattr(raw, "value", 0) is None and raw.length != 0:
            continue
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                _decode_every_element(item)


def _text(ds: Dataset | dict[str, Any], keyword: str, limit: int) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(item) for item in value)
    return str(value).strip()[:limit]


def _int(ds: Dataset | dict[str, Any], keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(value: Any) -> date | None:
    text = str(value or "").strip()
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _time(value: Any) -> time | None:
    text = str(value or "").strip().replace(":", "")
    digits = text.split(".")[0]
    try:
        hour = int(digits[0:2]) if len(digits) >= 2 else None
        if hour is None:
            return None
        minute = int(digits[2:4]) if len(digits) >= 4 else 0
        second = min(int(digits[4:6]), 59) if len(digits) >= 6 else 0
        return time(hour, minute, second)
    except ValueError:
        return None


def _raw_bytes(ds: Dataset, keyword: str) -> bytes | None:
    element = ds.get_item(keyword, keep_deferred=True)
    value = getattr(element, "value", None)
    return value if isinstance(value, bytes) else None


def _decode_iso2022_ir58(raw: bytes) -> str:
    # pydicom 3.0 leaves the "$)A" of the G1 designation in the decoded text. With G1
    # designated, GB 2312 characters have their high bits set (the EUC-CN form), so the
    # value decodes as GB 2312 once the escape sequences are removed.
    return raw.replace(ESC_ISO_IR_58, b"").replace(ESC_ASCII, b"").decode("gb2312", errors="replace")


def person_name_groups(
    ds: Dataset, keyword: str = "PatientName", raw: bytes | None = None
) -> tuple[str, str, str, str]:
    """(whole, alphabetic, ideographic, phonetic) of a PN value, decoded with the
    dataset's SpecificCharacterSet (ISO_IR 192, GB18030, ISO 2022 IR 58 ...)."""
    charsets = ds.get("SpecificCharacterSet") or []
    charsets = [charsets] if isinstance(charsets, str) else list(charsets)
    value: Any
    if raw is not None and "ISO 2022 IR 58" in charsets:
        value = PersonName(_decode_iso2022_ir58(raw).rstrip(" \x00"))
    else:
        try:
            value = ds.get(keyword)
        except Exception:
            return "", "", "", ""
    if value is None:
        return "", "", "", ""
    if not isinstance(value, PersonName):
        value = PersonName(str(value))
    try:
        groups = (value.alphabetic, value.ideographic, value.phonetic)
        whole = "=".join(groups).rstrip("=")
    except Exception:
        return str(value)[:324], "", "", ""
    return whole[:324], groups[0][:108], groups[1][:108], groups[2][:108]


def _index(
    tags: IndexedTags,
    staged: storage.StagedFile,
    key: str,
    transfer_syntax_uid: str,
    modality: Modality,
) -> tuple[Instance, bool]:
    ds = tags.values
    now = timezone.now()
    facility = modality.facility
    name, alphabetic, ideographic, phonetic = tags.names["PatientName"]
    patient_fields = {
        "issuer": _text(ds, "IssuerOfPatientID", 64),
        "name": name,
        "name_alphabetic": alphabetic,
        "name_ideographic": ideographic,
        "name_phonetic": phonetic,
        "name_initials": name_initials(alphabetic, ideographic),
        "birth_date": _date(ds.get("PatientBirthDate")),
        "sex": _text(ds, "PatientSex", 16),
    }
    series_modality = _text(ds, "Modality", 16).upper()
    institution = _text(ds, "InstitutionName", 128)
    station = _text(ds, "StationName", 64)
    with transaction.atomic():
        # Most instances join a series that exists: one lookup finds it and its study.
        known = (
            Series.objects.filter(series_uid=tags.series_uid)
            .values_list("pk", "study_id", "study__modalities_in_study")
            .first()
        )
        study_created = series_created = False
        if known is not None:
            series_pk, study_pk, modalities_in_study = known
        else:
            study = Study.objects.filter(study_uid=tags.study_uid).only("pk", "modalities_in_study").first()
            if study is None:
                patient, created = Patient.objects.get_or_create(
                    facility=facility, patient_id=_text(ds, "PatientID", 64), defaults=patient_fields
                )
                if not created and any(
                    value and getattr(patient, field) != value for field, value in patient_fields.items()
                ):
                    # The latest study carries the current demographics.
                    changed = {field: value for field, value in patient_fields.items() if value}
                    Patient.objects.filter(pk=patient.pk).update(**changed)
                study, study_created = Study.objects.get_or_create(
                    study_uid=tags.study_uid,
                    defaults={
                        "patient": patient,
                        "facility": facility,
                        "modality": modality,
                        "study_date": _date(ds.get("StudyDate")),
                        "study_time": _time(ds.get("StudyTime")),
                        "accession_number": _text(ds, "AccessionNumber", 64),
                        "study_id": _text(ds, "StudyID", 16),
                        "description": _text(ds, "StudyDescription", 128),
                        "referring_physician": tags.names["ReferringPhysicianName"][0],
                        "institution_name": institution,
                        "station_name": station,
                        "specific_character_set": _text(ds, "SpecificCharacterSet", 128),
                        "first_received_at": now,
                        "last_received_at": now,
                    },
                )
            series, series_created = Series.objects.get_or_create(
                series_uid=tags.series_uid,
                defaults={
                    "study": study,
                    "modality": series_modality,
                    "series_number": _int(ds, "SeriesNumber"),
                    "description": _text(ds, "SeriesDescription", 128),
                    "body_part_examined": _text(ds, "BodyPartExamined", 64),
                    "station_name": station,
                    "institution_name": institution,
                    "manufacturer": _text(ds, "Manufacturer", 64),
                },
            )
            series_pk, study_pk, modalities_in_study = series.pk, study.pk, study.modalities_in_study
        instance = Instance.objects.create(
            sop_instance_uid=tags.sop_instance_uid,
            sop_class_uid=tags.sop_class_uid,
            series_id=series_pk,
            instance_number=_int(ds, "InstanceNumber"),
            transfer_syntax_uid=transfer_syntax_uid,
            storage_key=key,
            size=staged.size,
            sha256=staged.sha256,
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            number_of_frames=_int(ds, "NumberOfFrames"),
        )
        Series.objects.filter(pk=series_pk).update(number_of_instances=F("number_of_instances") + 1)
        study_changes: dict[str, Any] = {
            "number_of_instances": F("number_of_instances") + 1,
            "last_received_at": now,
            # A late instance for a study that was already handed over.
            "status": Case(
                When(status=Study.Status.ARRIVED, then=Value(Study.Status.UPDATED)),
                default=F("status"),
            ),
        }
        if series_created:
            study_changes["number_of_series"] = F("number_of_series") + 1
        modalities = set(filter(None, modalities_in_study.split("\\")))
        if series_modality and series_modality not in modalities:
            study_changes["modalities_in_study"] = "\\".join(sorted(modalities | {series_modality}))[:64]
        Study.objects.filter(pk=study_pk).update(**study_changes)
    logger.debug("stored %s from %s as %s", tags.sop_instance_uid, modality.ae_title, key)
    return instance, study_created


def instances_metadata(instances: QuerySet[Instance], instance_url: Callable[[str, str], str]) -> list[str]:
    """The WADO-RS metadata of `instances` (in their order), as DICOM JSON texts to be
    joined into an array: the stored documents, each instance's BulkDataURIs made absolute by
    instance_url(series UID, SOP Instance UID). An instance indexed before documents were
    stored has its document computed from its file now, and kept. Raises OSError when
    such a file is missing."""
    rows = list(
        instances.values_list(
            "pk", "series__series_uid", "sop_instance_uid", "storage_key", "rows", "metadata__document"
        )
    )
    missing: list[InstanceMetadata] = []
    documents: list[str] = []
    for pk, series_uid, sop_uid, key, image_rows, document in rows:
        if document is None:
            try:
                document = metadata_document(str(storage.path_for(key)), image_rows)
            except OSError:
                logger.error("stored file of %s is missing (%s)", sop_uid, key)
                raise
            missing.append(InstanceMetadata(instance_id=pk, document=document))
        documents.append(with_instance_url(document, instance_url(series_uid, sop_uid)))
    if missing:
        InstanceMetadata.objects.bulk_create(missing, ignore_conflicts=True)
    return documents


# Documents written per INSERT by store_study_metadata: on SQLite each insert holds the one
# write lock, which a receiver's C-STORE then waits for.
METADATA_BATCH = 50


def store_study_metadata(study_pks: Iterable[int]) -> int:
    """Compute and keep the WADO-RS metadata of the studies' instances that have none,
    reading each file once; returns how many were computed. Run by the stability
    sweep when studies arrive, so that neither the receiver's association thread (where it
    cost about as much as indexing) nor the first /metadata request pays for it. An
    instance whose file is missing or cannot be written as JSON is left without one: it is
    computed, and the error met, on request."""
    missing = list(
        Instance.objects.filter(series__study_id__in=list(study_pks), metadata__isnull=True)
        .order_by("pk")
        .values_list("pk", "sop_instance_uid", "storage_key", "rows")
    )
    computed = 0
    batch: list[InstanceMetadata] = []
    for pk, sop_uid, key, image_rows in missing:
        try:
            document = metadata_document(str(storage.path_for(key)), image_rows)
        except Exception:
            logger.warning("no metadata computed for %s", sop_uid, exc_info=True)
            continue
        batch.append(InstanceMetadata(instance_id=pk, document=document))
        if len(batch) >= METADATA_BATCH:
            computed += len(InstanceMetadata.objects.bulk_create(batch, ignore_conflicts=True))
            batch = []
    if batch:
        computed += len(InstanceMetadata.objects.bulk_create(batch, ignore_conflicts=True))
    return computed


def indexed_keys(keys: Iterable[str]) -> set[str]:
    wanted = list(keys)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        found.update(Instance.objects.filter(storage_key__in=batch).values_list("storage_key", flat=True))
    return found


def sweep_orphan_files() -> int:
    """Remove what an interrupted store left behind; run once when the receiver starts."""
    return storage.sweep_orphans(indexed_keys)


def has_stable_studies(now: datetime, stable_seconds: float) -> bool:
    """Whether claim_stable_studies would find anything: a plain read, so that a sweep
    with nothing to do never takes SQLite's write lock."""
    cutoff = now - timedelta(seconds=stable_seconds)
    if Study.objects.filter(status=Study.Status.RECEIVING, last_received_at__lte=cutoff).exists():
        return True
    return PerformedProcedureStep.objects.filter(awaiting_images=True).exists() and bool(performed_studies_ready(now))


def claim_stable_studies(now: datetime, stable_seconds: float, limit: int = 200) -> list[Study]:
    """Studies that have received nothing for `stable_seconds` (at most `limit` of them,
    oldest first), and those whose images a completed performed procedure step (MPPS)
    listed are all stored, moved from receiving to arrived. Each study is claimed by
    exactly one caller: the move is a conditional UPDATE, so of two concurrent sweeps only
    one sees it change a row."""
    cutoff = now - timedelta(seconds=stable_seconds)
    candidates = list(
        Study.objects.filter(status=Study.Status.RECEIVING, last_received_at__lte=cutoff)
        .order_by("last_received_at")
        .values_list("pk", flat=True)[:limit]
    )
    performed = (
        performed_studies_ready(now) if PerformedProcedureStep.objects.filter(awaiting_images=True).exists() else []
    )
    claimed = [
        pk
        for pk in candidates
        if Study.objects.filter(pk=pk, status=Study.Status.RECEIVING, last_received_at__lte=cutoff).update(
            status=Study.Status.ARRIVED, arrived_at=now
        )
    ]
    claimed += [
        pk
        for pk in dict.fromkeys(performed)
        if pk not in claimed
        and Study.objects.filter(pk=pk, status=Study.Status.RECEIVING).update(
            status=Study.Status.ARRIVED, arrived_at=now
        )
    ]
    if performed:
        settle_performed_steps(claimed)
    return list(Study.objects.filter(pk__in=claimed).select_related("facility", "modality", "patient"))
