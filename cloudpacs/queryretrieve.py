"""Services of the archive's DIMSE query/retrieve and storage commitment: which studies,
series and instances a registered application entity finds and retrieves, what a
retrieve records in the audit trail, and which instances are durably stored.

The receiver (dicomnode.queryretrieve, dicomnode.commitment) parses the DICOM identifiers
and hands their keys here. The scope is `facilities.access.studies_for_entity`, the same
rule as the pages and DICOMweb; the matching is DICOMweb's (cloudpacs.dicomweb.qido), so
a C-FIND and a QIDO-RS search with the same keys find the same studies."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cloudpacs import counts, storage
from cloudpacs.dicomweb import qido
from cloudpacs.dicomweb.http import DicomwebError
from cloudpacs.models import Instance, Patient, Series, Study, UnsyncedFile
from facilities.access import refuse_study, studies_for_entity
from facilities.models import ApplicationEntity
from facilities.services import audit

logger = logging.getLogger("cloudpacs.queryretrieve")

PATIENT, STUDY, SERIES, IMAGE = "PATIENT", "STUDY", "SERIES", "IMAGE"
LEVELS = (PATIENT, STUDY, SERIES, IMAGE)
STUDY_RETRIEVED = "cloudpacs.study.retrieved"
COMMITMENT_REPORTED = "cloudpacs.storage_commitment.reported"

# The unique key of each level (PS3.4 C.3), by tag as the matching tables name them.
UNIQUE_KEYS = {PATIENT: "00100020", STUDY: "0020000D", SERIES: "0020000E", IMAGE: "00080018"}
PATIENT_KEYS = {"00100010", "00100020", "00100030", "00100040"}
# At most this many instances in one C-MOVE or C-GET: its response counts sub-operations
# in a US (PS3.4 C.4.2.3), and a retrieve of more is asked for in parts.
MAX_RETRIEVE = 65535

# Failure reasons of a Storage Commitment's Failed SOP Sequence (PS3.4 J.3.3.1.1).
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110


class QueryError(ValueError):
    """A query or retrieve identifier that cannot be answered as given."""


@dataclass
class ArchiveQuery:
    """The matching keys of a C-FIND, C-MOVE or C-GET identifier: {tag: value} as DICOM
    text (multiple values joined by backslash), the level and the information model."""

    level: str
    keys: dict[str, str] = field(default_factory=dict)
    patient_root: bool = False
    # Study Date and Study Time as one date-time range (PS3.4 C.2.2.2.5.1), when the SCU
    # asked for it in its extended negotiation; otherwise each is matched on its own.
    combined_datetime: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise QueryError(f"Query/Retrieve Level {self.level!r} is not one of {', '.join(LEVELS)}")
        if self.level == PATIENT and not self.patient_root:
            raise QueryError("the Study Root information model has no PATIENT level")


# --- Matching ---------------------------------------------------------------------------

STUDY_DATE = "00080020"
STUDY_TIME = "00080030"


def _condition(query: ArchiveQuery, study_prefix: str, series_prefix: str, *, upto: str) -> Q:
    """The keys of the levels down to `upto` as one condition on the queried model."""
    tables: dict[str, tuple[str, qido.Builder]] = dict(qido.STUDY_KEYS)
    if LEVELS.index(upto) >= LEVELS.index(SERIES):
        tables.update(qido.SERIES_KEYS)
    if upto == IMAGE:
        tables.update(qido.INSTANCE_KEYS)
    condition = Q()
    combined = _combined(query)
    try:
        for tag, value in query.keys.items():
            # Study Time is matched below, with Study Date when the two are combined.
            if not value or tag not in tables or tag == STUDY_TIME or (combined and tag == STUDY_DATE):
                continue
            condition &= tables[tag][1](study_prefix, series_prefix, value)
        if combined:
            condition &= _datetime_match(study_prefix, query.keys[STUDY_DATE], query.keys[STUDY_TIME])
        elif query.keys.get(STUDY_TIME):
            condition &= qido.time_match(f"{study_prefix}study_time", query.keys[STUDY_TIME])
    except DicomwebError as exc:
        raise QueryError(str(exc.args[0] if exc.args else exc)) from None
    return condition


def _combined(query: ArchiveQuery) -> bool:
    """Whether Study Date and Study Time are matched as one range: negotiated, both given,
    and the date a range (a single date with a time range is the same either way)."""
    date_key = query.keys.get(STUDY_DATE, "").strip()
    time_key = query.keys.get(STUDY_TIME, "").strip()
    return query.combined_datetime and "-" in date_key and bool(time_key) and time_key != "*"


def _datetime_match(prefix: str, date_value: str, time_value: str) -> Q:
    """A date range with a time range as one date-time range (PS3.4 C.2.2.2.5.1):
    20250901-20250903 with 2200-0600 is from 1 September 22:00 to 3 September 06:00. A
    study strictly inside the dates matches whatever its time; on a boundary day its time
    decides (a study with no time there does not match, as with the time key alone)."""
    low_date, high_date = (part.strip() for part in date_value.split("-", 1))
    if "-" in time_value:
        low_time, high_time = (part.strip() for part in time_value.split("-", 1))
    else:
        low_time = high_time = time_value
    day, at = f"{prefix}study_date", f"{prefix}study_time"
    condition = Q()
    if low_date:
        first = qido._date(low_date)
        after = Q(**{f"{day}__gt": first})
        if low_time:
            after |= Q(**{day: first, f"{at}__gte": qido.parse_time(low_time)})
        else:
            after |= Q(**{day: first})
        condition &= after
    if high_date:
        last = qido._date(high_date)
        before = Q(**{f"{day}__lt": last})
        if high_time:
            before |= Q(**{day: last, f"{at}__lte": qido.parse_time(high_time, upper=True)})
        else:
            before |= Q(**{day: last})
        condition &= before
    return condition


def scoped_studies(entity: ApplicationEntity) -> QuerySet[Study]:
    return studies_for_entity(entity)


STUDY_FIELDS = (*qido.STUDY_FIELDS, "pk")
SERIES_FIELDS = (
    "pk",
    "series_uid",
    "modality",
    "series_number",
    "description",
    "body_part_examined",
    "station_name",
    "institution_name",
    "manufacturer",
    "number_of_instances",
)
INSTANCE_FIELDS = (
    "pk",
    "sop_instance_uid",
    "sop_class_uid",
    "instance_number",
    "transfer_syntax_uid",
    "rows",
    "columns",
    "number_of_frames",
)
PATIENT_FIELDS = (
    "pk",
    "patient_id",
    "issuer",
    "name_alphabetic",
    "name_ideographic",
    "name_phonetic",
    "birth_date",
    "sex",
)


def _prefixed(prefix: str, names: tuple[str, ...]) -> list[str]:
    return [f"{prefix}{name}" for name in names]


def find(entity: ApplicationEntity, query: ArchiveQuery) -> Iterator[dict[str, Any]]:
    """The rows a C-FIND at `query.level` matches within the entity's scope, as dicts of
    values (study fields named as in qido.STUDY_FIELDS; series and instance fields
    prefixed `series__` and `instance__`), newest study first. Read as the caller
    iterates, in chunks, so a wide query streams instead of loading every row."""
    studies = scoped_studies(entity)
    if query.level == PATIENT:
        yield from _find_patients(studies, query)
        return
    if query.level == STUDY:
        queryset: QuerySet[Any] = studies.filter(_condition(query, "", "", upto=STUDY))
        rows = (
            counts.with_counted(queryset)
            .order_by("-study_date", "-study_time", "-pk")
            .values(*STUDY_FIELDS, counts.COUNTED)
        )
        yield from _chunks(rows, study=("pk", "number_of_instances"))
        return
    if query.level == SERIES:
        series = Series.objects.filter(study__in=studies.values("pk")).filter(
            _condition(query, "study__", "", upto=SERIES)
        )
        names = [*_prefixed("study__", STUDY_FIELDS), *SERIES_FIELDS]
        ordered_series = (
            counts.with_counted(series).order_by("study_id", "series_number", "pk").values(*names, counts.COUNTED)
        )
        for row in _chunks(
            ordered_series, study=("study__pk", "study__number_of_instances"), series=("pk", "number_of_instances")
        ):
            yield _renamed(row, "study__", "series__")
        return
    instances = Instance.objects.filter(series__study__in=studies.values("pk")).filter(
        _condition(query, "series__study__", "series__", upto=IMAGE)
    )
    names = [*_prefixed("series__study__", STUDY_FIELDS), *_prefixed("series__", SERIES_FIELDS), *INSTANCE_FIELDS]
    ordered = instances.order_by("series__study_id", "series_id", "instance_number", "pk")
    for row in _chunks(
        counts.with_counted(ordered).values(*names, counts.COUNTED),
        study=("series__study__pk", "series__study__number_of_instances"),
        series=("series__pk", "series__number_of_instances"),
    ):
        yield _renamed_instance(row)


CHUNK = 500


def _chunks(
    rows: QuerySet[Any], study: tuple[str, str] | None = None, series: tuple[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """The rows a page of CHUNK at a time, each page its own LIMIT/OFFSET query. Not a
    server-side cursor (QuerySet.iterator): PostgreSQL plans a cursor for its first rows
    and walked the whole (date) order index of 100,000 studies for a Patient ID that one
    study has (8 s); with a LIMIT it takes the Patient ID's index and sorts the few rows.
    A match arriving between two pages may be missed or repeated, as with any paging."""
    offset = 0
    while True:
        page = list(rows[offset : offset + CHUNK])
        # The counters completed with the instances not folded yet, unless the gate read
        # with the chunk holds (cloudpacs.counts).
        counts.exact_rows(page, study=study, series=series)
        yield from page
        if len(page) < CHUNK:
            return
        offset += CHUNK


def _renamed(row: dict[str, Any], study_prefix: str, own_prefix: str) -> dict[str, Any]:
    """Study fields without their path, the level's own with `own_prefix`."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name.startswith(study_prefix):
            out[name[len(study_prefix) :]] = value
        else:
            out[f"{own_prefix}{name}"] = value
    return out


def _renamed_instance(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name.startswith("series__study__"):
            out[name[len("series__study__") :]] = value
        elif name.startswith("series__"):
            out[name] = value
        else:
            out[f"instance__{name}"] = value
    return out


def _find_patients(studies: QuerySet[Study], query: ArchiveQuery) -> Iterator[dict[str, Any]]:
    """Patients with at least one study in scope; their counts are of those studies."""
    condition = Q()
    patient_keys = {tag: value for tag, value in query.keys.items() if tag in PATIENT_KEYS}
    try:
        for tag, value in patient_keys.items():
            if value:
                condition &= qido.STUDY_KEYS[tag][1]("", "", value)
    except DicomwebError as exc:
        raise QueryError(str(exc.args[0] if exc.args else exc)) from None
    # The study-level builders name the patient's fields through `patient__`: match the
    # studies, and answer their patients.
    in_scope = studies.filter(condition)
    counted = in_scope.filter(patient=OuterRef("pk")).order_by().values("patient").annotate(studies=Count("pk"))
    patients = Patient.objects.filter(pk__in=in_scope.values("patient_id")).annotate(
        related_studies=Subquery(counted.values("studies")[:1])
    )
    rows = patients.order_by("patient_id", "pk").values(*PATIENT_FIELDS, "related_studies")
    for row in _chunks(rows):
        out = {f"patient__{name}": row[name] for name in PATIENT_FIELDS if name != "pk"}
        out["patient__pk"] = row["pk"]
        out["related_studies"] = row["related_studies"] or 0
        yield out


# --- Retrieve ---------------------------------------------------------------------------


@dataclass
class RetrieveItem:
    """One instance to send: what the C-STORE sub-operation needs, and its study."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    storage_key: str
    study_pk: int


def instances_to_retrieve(entity: ApplicationEntity, query: ArchiveQuery) -> list[RetrieveItem]:
    """The instances a C-MOVE or C-GET at `query.level` asks for, within the entity's
    scope. The level's unique key (or one above it) must be given: a retrieve names what
    it wants (PS3.4 C.4.2.1.4)."""
    upper = LEVELS[: LEVELS.index(query.level) + 1]
    if not any(query.keys.get(UNIQUE_KEYS[level]) for level in upper if level != PATIENT or query.patient_root):
        raise QueryError(f"a {query.level} retrieve needs its unique key ({UNIQUE_KEYS[query.level]})")
    studies = scoped_studies(entity)
    unique = {tag: value for tag, value in query.keys.items() if tag in UNIQUE_KEYS.values() and value and value != "*"}
    restricted = ArchiveQuery(IMAGE, unique, patient_root=True)
    instances = Instance.objects.filter(series__study__in=studies.values("pk")).filter(
        _condition(restricted, "series__study__", "series__", upto=IMAGE)
    )
    rows = instances.order_by("series__study_id", "series_id", "instance_number", "pk").values_list(
        "sop_class_uid", "sop_instance_uid", "transfer_syntax_uid", "storage_key", "series__study_id"
    )
    found = [RetrieveItem(*row) for row in rows[: MAX_RETRIEVE + 1]]
    if len(found) > MAX_RETRIEVE:
        raise QueryError(f"more than {MAX_RETRIEVE} instances match; retrieve them in parts")
    return found


# Stored in these, an instance's Pixel Data is read from its file as it is sent.
STREAMED_SYNTAXES = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
# Values larger than this are read when used, not with the rest of the dataset.
DEFER_SIZE = 256 * 1024
# The read buffer over an object in the object store.
STREAM_BUFFER = 1024 * 1024


def read_instance(item: RetrieveItem) -> Dataset:
    """The stored instance as pydicom reads it, through the storage module (local disk or
    the object store); one stored in Explicit VR Big Endian made little endian
    (`as_little_endian`): pynetdicom sends an uncompressed dataset in whichever little
    endian syntax the peer accepted, but never converts from big endian, a syntax retired
    since 2004 that few workstations accept, and the sub-operation failed.

    Stored in Explicit or Implicit VR Little Endian, its Pixel Data is not read into
    memory, on local disk or in the object store: the value is the stored file's range
    (`FileRange`), which pydicom copies in chunks into the C-STORE message pynetdicom
    encodes, and the file stays open until the dataset goes. Read whole, a 90 MB
    multi-frame instance was held twice while sent (once read, once encoded: 376 MB at the
    process's peak; bench/qr/transcode_memory.py)."""
    stream: Any = storage.open_key(item.storage_key)
    if not isinstance(stream, io.BufferedIOBase):
        # The object store's reader, made a buffered file: pydicom's condition for a file
        # as a value. Each refill is one ranged GET of STREAM_BUFFER bytes, so a 90 MB
        # instance is sent in about 90 GETs and held a MiB at a time.
        stream = io.BufferedReader(stream, buffer_size=STREAM_BUFFER)
    if item.transfer_syntax_uid not in STREAMED_SYNTAXES:
        with stream:
            return as_little_endian(dcmread(stream))
    try:
        ds = dcmread(stream, defer_size=DEFER_SIZE)
        raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
        if (
            ds.file_meta.get("TransferSyntaxUID") in STREAMED_SYNTAXES
            and isinstance(raw, RawDataElement)
            and raw.value is None
            and raw.length != 0xFFFFFFFF
        ):
            # Implicit VR names no VR: OW beyond 8 bits allocated (PS3.5 A.1), as pydicom decides.
            vr = raw.VR or ("OW" if int(ds.get("BitsAllocated") or 16) > 8 else "OB")
            ds[PIXEL_DATA] = DataElement(PIXEL_DATA, vr, FileRange(stream, raw.value_tell, raw.length))
        else:
            # Every value read now, while the file is open.
            for element in ds.iterall():
                element.value  # noqa: B018
            stream.close()
        return as_little_endian(ds)
    except BaseException:
        stream.close()
        raise


class FileRange(io.BufferedIOBase):
    """`length` bytes of `stream` from `start`, as a file of their own: what pydicom takes
    as an element's value and writes in chunks (it seeks to the end to know the length).
    Closing it closes `stream`."""

    def __init__(self, stream: Any, start: int, length: int) -> None:
        super().__init__()
        self._stream, self._start, self._length, self._position = stream, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + offset))
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._position
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self._stream.seek(self._start + self._position)
        chunk = self._stream.read(size)
        self._position += len(chunk)
        return chunk

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def close(self) -> None:
        self._stream.close()
        super().close()


# The binary VRs whose values are numbers of this many bytes, each in the transfer syntax's
# byte order (PS3.5 6.2); OB, UN and the rest are bytes.
SWAPPED_UNITS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
PIXEL_DATA = 0x7FE00010


def as_little_endian(ds: Dataset) -> Dataset:
    """`ds` (read whole) as Explicit VR Little Endian when it was read from Explicit VR Big
    Endian, else unchanged. pydicom re-encodes decoded values in the byte order it writes
    in, but writes binary values as they are: each OW, OF, OL, OD and OV value (in
    sequences too) is byte-swapped here, Pixel Data by 16-bit words up to 16 bits
    allocated (8-bit pixels in OW too, PS3.5 8.1.1) and by whole samples beyond."""
    if ds.original_encoding[1] is not False:
        return ds
    bits = int(ds.get("BitsAllocated") or 16)
    _swap_binary_values(ds, bits)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # Every element is decoded now (the swap walked them all): pynetdicom reads the byte
    # order to send in from here, and pydicom then encodes each value little endian.
    ds.set_original_encoding(False, True, ds.original_character_set)
    return ds


def _swap_binary_values(ds: Dataset, bits: int) -> None:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _swap_binary_values(item, bits)
            continue
        unit = SWAPPED_UNITS.get(element.VR)
        if element.tag == PIXEL_DATA and unit:
            unit = 2 if bits <= 16 else bits // 8
        value = element.value
        if unit and isinstance(value, bytes) and value and len(value) % unit == 0:
            element.value = np.frombuffer(value, dtype=f"u{unit}").byteswap().tobytes()


# At most this many refused studies are written for one request: an identifier may list
# UIDs, and the trail is for people to read.
MAX_REFUSALS = 16


def record_refusals(entity: ApplicationEntity, query: ArchiveQuery, *, via: str) -> int:
    """One `cloudpacs.study.access_refused` entry for each study that a C-FIND, C-MOVE or
    C-GET names by its Study, Series or SOP Instance UID (no wildcard) that exists but is
    outside the entity's scope: the request is answered as if it did not exist (no match,
    no sub-operation), and the study's facility sees the attempt, with the calling AE
    title. One entry per study per request, never per instance. Returns how many."""
    condition = Q()
    lookups = {
        STUDY: "study_uid__in",
        SERIES: "series__series_uid__in",
        IMAGE: "series__instances__sop_instance_uid__in",
    }
    for level, lookup in lookups.items():
        named = [
            uid.strip()
            for uid in query.keys.get(UNIQUE_KEYS[level], "").split("\\")
            if uid.strip() and not any(char in uid for char in "*?")
        ]
        if named:
            condition |= Q(**{lookup: named})
    if not condition:
        return 0
    outside = (
        Study.objects.filter(condition)
        .exclude(pk__in=scoped_studies(entity).values("pk"))
        .select_related("facility")
        .distinct()
        .order_by("pk")[:MAX_REFUSALS]
    )
    refused = list(outside)
    for study in refused:
        refuse_study(None, study, via=via, calling_ae=entity.ae_title)
    return len(refused)


def record_retrieval(entity: ApplicationEntity, items: list[RetrieveItem], *, via: str, destination: str = "") -> None:
    """One audit entry per study retrieved: who (the calling AE title), how (C-MOVE to a
    destination, or C-GET) and how many instances."""
    per_study: dict[int, int] = {}
    for item in items:
        per_study[item.study_pk] = per_study.get(item.study_pk, 0) + 1
    for study in Study.objects.filter(pk__in=per_study).select_related("facility"):
        audit(
            STUDY_RETRIEVED,
            obj=study,
            facility=study.facility,
            via=via,
            calling_ae=entity.ae_title,
            destination=destination,
            instances=per_study[study.pk],
        )


# --- Storage commitment -----------------------------------------------------------------


@dataclass
class CommitmentResult:
    committed: list[tuple[str, str]] = field(default_factory=list)
    # (SOP Class UID, SOP Instance UID, failure reason)
    failed: list[tuple[str, str, int]] = field(default_factory=list)


def commitment(entity: ApplicationEntity, transaction_uid: str, references: list[tuple[str, str]]) -> CommitmentResult:
    """Which of the referenced instances the archive holds durably for the entity's
    facility: indexed with the same SOP Class, and the file in the store with its size.
    An instance of another facility is "no such object instance", as one never stored.
    One whose row was committed before its file's fsync returned (an UnsyncedFile row:
    being stored now, or not yet cleared) has its file synced here before it counts."""
    uids = [uid for _, uid in references]
    unsynced = set(
        UnsyncedFile.objects.filter(instance__sop_instance_uid__in=uids).values_list(
            "instance__sop_instance_uid", flat=True
        )
    )
    stored = {
        row["sop_instance_uid"]: row
        for row in Instance.objects.filter(sop_instance_uid__in=uids, series__study__facility_id=entity.facility_id)
        .values("sop_instance_uid", "sop_class_uid", "storage_key", "size")
        .iterator(chunk_size=500)
    }
    result = CommitmentResult()
    for class_uid, uid in references:
        row = stored.get(uid)
        if row is None:
            result.failed.append((class_uid, uid, NO_SUCH_OBJECT_INSTANCE))
        elif row["sop_class_uid"] != class_uid:
            result.failed.append((class_uid, uid, CLASS_INSTANCE_CONFLICT))
        elif not _durable(row["storage_key"], row["size"], sync=uid in unsynced):
            result.failed.append((class_uid, uid, PROCESSING_FAILURE))
        else:
            result.committed.append((class_uid, uid))
    audit(
        COMMITMENT_REPORTED,
        object_type="dicom.storage_commitment",
        object_id=transaction_uid[:128],
        facility=entity.facility,
        calling_ae=entity.ae_title,
        committed=len(result.committed),
        failed=len(result.failed),
    )
    return result


def _durable(key: str, size: int, sync: bool = False) -> bool:
    """The file is in the store (on disk, or acknowledged by the object store) with the
    size indexed; with `sync`, and now fsynced with its directory."""
    try:
        if storage.size_of(key) != size:
            return False
        if sync:
            storage.sync_key(key)
        return True
    except Exception:
        # Not there, or the store cannot be asked: not committed now; the console asks again.
        return False
