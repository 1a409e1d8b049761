"""Services of the archive: storing a received instance, and deciding when a study is stable.

`ingest_instance` is the one way an image enters the archive. It writes the dataset as
received (never decoded and re-encoded), gives it its final name, fsyncs it, and indexes
it; it returns, and the DICOM receiver answers Success, only once the file is durable and
the index committed. The index waits for the fsync, except for the one statement of an
instance of a known series on PostgreSQL (local disk), which commits while the fsync runs
and records so (UnsyncedFile) for the next start to resolve after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import heapq
import io
import logging
import os
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, NamedTuple, cast
from uuid import UUID

import pydicom
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, CharField, F, Max, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _
from pydicom import dcmread
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import AMBIGUOUS_VR, VR, PersonName
from pynetdicom import AE, evt
from pynetdicom.association import Association

from cloudpacs import conformance, counts, dicomsocket, keyobjects, pinning, storage, tagvalues
from cloudpacs.counts import (  # noqa: F401 (the counters' readers, as other apps call them)
    exact_series,
    exact_studies,
    last_received,
    series_instances,
    study_instances,
    with_counted,
)
from cloudpacs.dicomweb.json import metadata_document, with_instance_url
from cloudpacs.models import (
    IngestConflict,
    Instance,
    InstanceMetadata,
    InstanceVersion,
    Patient,
    PatientIdentifier,
    PerformedProcedureStep,
    Series,
    Study,
    UnsyncedFile,
)
from cloudpacs.orders import (  # noqa: F401 (the archive's services, as other apps call them)
    body_part_for,
    body_part_name,
    body_part_names,
    body_parts_for_kind,
    named_parts_in,
    order_for_study,
    part_name_map,
    performed_studies_ready,
    register_order,
    settle_performed_steps,
)
from cloudpacs.personname import name_initials
from facilities.models import Modality, User
from facilities.services import audit

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
PERSON_NAME_TAG_NUMBERS = [(keyword, Tag(keyword)) for keyword in PERSON_NAME_TAGS]

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
    "OtherPatientIDsSequence",
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
INDEXED_TAG_NUMBERS = [(keyword, Tag(keyword)) for keyword in INDEXED_TAGS]


class IngestOutcome(StrEnum):
    STORED = "stored"
    # The same SOP Instance UID with the same content: answered as a success, kept once.
    DUPLICATE = "duplicate"
    # The same SOP Instance UID with other content, a correction (DICOM_OVERWRITE_POLICY):
    # it replaced the stored content, which is kept as a prior version ...
    REPLACED = "replaced"
    # ... or, the study's report being signed, it is kept beside it as a pending correction.
    PENDING_CORRECTION = "pending_correction"


@dataclass(frozen=True)
class IngestResult:
    outcome: IngestOutcome
    instance: Instance
    study_created: bool = False


class IngestError(Exception):
    """A received dataset that was not stored; the message says why, for the log and the
    sender. `status` is the failure status both doors answer (cloudpacs.conformance)."""

    status: ClassVar[int] = conformance.PROCESSING_FAILURE


class UnreadableDataset(IngestError):
    """The payload cannot be parsed as a DICOM dataset in its transfer syntax."""

    status = conformance.CANNOT_UNDERSTAND


class MissingIdentifier(IngestError):
    """A Study, Series or SOP Instance UID is missing or unusable, or the SOP Instance UID
    is not the one the dataset was announced as."""

    status = conformance.BAD_IDENTIFIER


class SOPClassMismatch(IngestError):
    """The dataset's SOP Class is not the one it was announced as (its presentation
    context, or its File Meta Information)."""

    status = conformance.DOES_NOT_MATCH_SOP_CLASS


class OutOfResources(IngestError):
    """The store is full or the index is unavailable; the sender may retry later."""

    status = conformance.OUT_OF_RESOURCES


class IdentityConflict(IngestError):
    """Storing the instance would mix identities: put it in another facility's study or
    series, in another study, or under another patient, or replace an image the overwrite
    policy keeps. Nothing is stored and the refusal is recorded (IngestConflict).

    `status` is the answer's Failure status (PS3.4 B.2.3 "cannot understand", Cxxx), one
    per reason, used by the DICOM receiver and STOW-RS alike; `comment` is the Error
    Comment (an LO, at most 64 characters): it names the conflict, never the other
    facility, study or patient. The exception's message adds, for the log, what the
    archive holds."""

    status: ClassVar[int]
    comment: ClassVar[str]
    reason: ClassVar[str]


class StudyOfAnotherFacility(IdentityConflict):
    status = 0xC010
    comment = "StudyInstanceUID is in use by another facility"
    reason = IngestConflict.Reason.STUDY_OF_ANOTHER_FACILITY


class SeriesOfAnotherFacility(IdentityConflict):
    status = 0xC011
    comment = "SeriesInstanceUID is in use by another facility"
    reason = IngestConflict.Reason.SERIES_OF_ANOTHER_FACILITY


class SeriesOfAnotherStudy(IdentityConflict):
    status = 0xC012
    comment = "SeriesInstanceUID belongs to another study"
    reason = IngestConflict.Reason.SERIES_OF_ANOTHER_STUDY


class PatientMismatch(IdentityConflict):
    status = 0xC013
    comment = "PatientID or IssuerOfPatientID differs from the study's"
    reason = IngestConflict.Reason.PATIENT_MISMATCH


class InstanceElsewhere(IdentityConflict):
    status = 0xC014
    comment = "SOPInstanceUID is stored in another study"
    reason = IngestConflict.Reason.INSTANCE_ELSEWHERE


class CorrectionRefused(IdentityConflict):
    status = 0xC015
    comment = "SOPInstanceUID is stored with other content; not replaced"
    reason = IngestConflict.Reason.CORRECTION_REFUSED


IDENTITY_CONFLICTS: list[type[IdentityConflict]] = [
    StudyOfAnotherFacility,
    SeriesOfAnotherFacility,
    SeriesOfAnotherStudy,
    PatientMismatch,
    InstanceElsewhere,
    CorrectionRefused,
]


class OverwritePolicy(StrEnum):
    """What a different content under a stored SOP Instance UID does (DICOM_OVERWRITE_POLICY)."""

    # From the modality that sent the study: replaces the stored content until the report
    # is signed, then waits beside it as a pending correction; from another, refused.
    SAME_SOURCE = "same_source"
    # The same from any modality of the study's facility.
    ANY_SOURCE = "any_source"
    # Never: every different content is refused (and listed as a conflict).
    NEVER = "never"


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


def warm_up_ingest() -> None:
    """Load now what storing the first instances would load inside a C-STORE: pypinyin's
    dictionaries (a new study's patient initials) take seconds on a loaded machine, and
    the console waits for that answer. The receiver calls it before it listens."""
    name_initials("", "云影")


def ingest_instance(
    source: Path | BinaryIO,
    *,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: Modality,
    adopt: bool = False,
    sha256: str | None = None,
    channel: str = IngestConflict.Channel.DIMSE,
    association: UUID | None = None,
    user: User | None = None,
) -> IngestResult:
    """Store one received dataset and index it.

    `source` is a path to the Part 10 file pynetdicom wrote while receiving, or a stream
    of the bare dataset bytes; `transfer_syntax_uid` is the accepted presentation
    context's; `sop_class_uid` and `sop_instance_uid` come from the C-STORE request
    (the class is the context's abstract syntax). With `adopt`, a source file on the
    store's filesystem is moved into the store instead of copied; `sha256`, when the
    receiver hashed the dataset bytes as they arrived, spares reading the moved file again.
    `channel`, `association` (the receiver's opaque reference to its association) and
    `user` (STOW-RS) are only recorded with a refusal. Raises an IngestError subclass
    when nothing was stored; an IdentityConflict is recorded as an IngestConflict first."""
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
    tags: IndexedTags | None = None
    ahead: storage.Publishing | None = None
    try:
        try:
            # The dataset read once, its values not converted yet. The file's fsyncs then
            # wait on the disk while its tags are converted and checked: its key needs only
            # the Study Instance UID, taken from the element as read. What the tags then
            # say decides whether it is indexed, under that key or not at all.
            ds = _read_dataset(staged.path, staged.dataset_offset, transfer_syntax_uid, sop_instance_uid)
            study_uid = _study_uid_ahead(ds)
            if study_uid is not None:
                ahead = storage.publish_ahead(staged, storage.key_for(study_uid, sop_instance_uid, staged.sha256))
            tags = _read_indexed_tags(ds, staged.path, sop_class_uid, sop_instance_uid, transfer_syntax_uid, channel)
        except IngestError:
            # Read in the wrong byte order a dataset yields garbage tags, and a refusal
            # for a missing UID or an odd value: say what is wrong instead.
            _check_byte_order(staged.path, staged.dataset_offset, transfer_syntax_uid)
            raise
        return _store(tags, staged, transfer_syntax_uid, modality, ahead)
    except IdentityConflict as conflict:
        assert tags is not None
        _record_conflict(conflict, tags, modality, channel, association, user)
        raise
    finally:
        if ahead is not None:
            # Refused before it was indexed (or its key was not the one guessed).
            ahead.abandon(indexed_keys)
        storage.discard(staged)


STUDY_INSTANCE_UID = BaseTag(0x0020000D)
# (0002,0003) Media Storage SOP Instance UID, (0002,0010) Transfer Syntax UID.
MEDIA_STORAGE_SOP_INSTANCE_UID = 0x0003
TRANSFER_SYNTAX_UID = 0x0010
# The VRs whose length is written in four bytes after two reserved ones in explicit VR.
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
CARRIES_FILE_META = "the dataset carries file meta elements (group 0002) of its own"


@functools.lru_cache(maxsize=64)
def _syntax(transfer_syntax_uid: str) -> UID:
    """The transfer syntax as pydicom's UID, made once per syntax: each UID() validates its
    value by regular expression, and each instance's read and checks asked three times."""
    return UID(transfer_syntax_uid)


def _study_uid_ahead(ds: Dataset) -> str | None:
    """The Study Instance UID of a dataset as read by _read_dataset, from the element's
    bytes without converting it, or None when it has none at its top level. Only a guess
    of the key: the tags read in full decide."""
    raw: Any = ds._dict.get(STUDY_INSTANCE_UID)
    value = raw.value if isinstance(raw, RawDataElement) else getattr(raw, "value", None)
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii").strip("\0 ")
        except UnicodeDecodeError:
            return None
    elif isinstance(value, str):
        text = value.strip("\0 ")
    else:
        return None
    return text or None


def _file_meta_values(head: bytes) -> dict[int, str] | None:
    """The UI values of a Part 10 file's meta group (explicit VR little endian, from byte
    132 to `len(head)`), by element number; None when it cannot be walked."""
    values: dict[int, str] = {}
    offset, end = 132, len(head)
    while offset < end:
        if end - offset < 8:
            return None
        group, element, vr = struct.unpack_from("<HH2s", head, offset)
        if group != 0x0002:
            return None
        if vr in LONG_VRS:
            if end - offset < 12:
                return None
            (length,) = struct.unpack_from("<I", head, offset + 8)
            offset += 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            offset += 8
        if length > end - offset:
            return None
        if vr == b"UI":
            values[element] = head[offset : offset + length].decode("latin-1").strip("\0 ")
        offset += length
    return values


def _read_dataset(path: Path, offset: int, transfer_syntax_uid: str, sop_instance_uid: str) -> Dataset:
    """The staged file's dataset as pydicom reads it, each value left as read (converted
    when asked for) and bulk values deferred: skipped over, never read into memory.

    The file's meta group is the receiver's own (or, adopted, the sender's, checked here
    against the request): read from the dataset's offset, without what pydicom's dcmread
    does around it (the meta group converted and validated, the preamble and the command
    group looked for): a third of dcmread's time on a small CT image. A dataset that
    begins with file meta elements of its own is refused: a reader would take them for
    the header. A deflated dataset, or one in a syntax pydicom does not know, is dcmread's."""
    try:
        syntax = _syntax(transfer_syntax_uid)
        if not syntax.is_transfer_syntax or syntax.is_deflated:
            ds = dcmread(path, defer_size=4096)
            written = (ds.file_meta.get("TransferSyntaxUID"), ds.file_meta.get("MediaStorageSOPInstanceUID"))
            if tuple(str(value or "") for value in written) != (transfer_syntax_uid, sop_instance_uid):
                raise UnreadableDataset(CARRIES_FILE_META)
            return ds
        with open(path, "rb") as stream:
            meta = _file_meta_values(stream.read(offset))
            if meta is None or (meta.get(TRANSFER_SYNTAX_UID), meta.get(MEDIA_STORAGE_SOP_INSTANCE_UID)) != (
                transfer_syntax_uid,
                sop_instance_uid,
            ):
                raise UnreadableDataset(CARRIES_FILE_META)
            dataset = read_dataset(stream, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=4096)
    except UnreadableDataset:
        raise
    except Exception as exc:
        raise UnreadableDataset(f"cannot parse the dataset: {type(exc).__name__}: {exc}") from exc
    if any(tag >> 16 == 0x0002 for tag in dataset._dict):
        raise UnreadableDataset(CARRIES_FILE_META)
    # A FileDataset, so that a deferred value is read from its file when asked for; its
    # encoding as dcmread gives it.
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    ds = FileDataset(str(path), dataset, is_implicit_VR=implicit, is_little_endian=little)
    ds.set_original_encoding(implicit, little, dataset._character_set)
    return ds


def _store(
    tags: IndexedTags,
    staged: storage.StagedFile,
    transfer_syntax_uid: str,
    modality: Modality,
    ahead: storage.Publishing | None = None,
) -> IngestResult:
    key = storage.key_for(tags.study_uid, tags.sop_instance_uid, staged.sha256)
    if ahead is not None and ahead.key != key:
        ahead.abandon(indexed_keys)
        ahead = None
    # Whether the file's name is new (see storage.publish), once it has it.
    created: bool | None = None
    synced = False

    def published(wait: Callable[[], bool]) -> bool:
        try:
            return wait()
        except storage.StoreUnavailable as exc:
            # The object store is down, too slow or refused the PUT: nothing is indexed,
            # and the sender is told to try again later. A PUT the store took after all
            # is left to the orphan sweep (manage.py storage_verify --orphans).
            raise OutOfResources(f"image store unavailable: {exc}") from exc
        except OSError as exc:
            # Only a name this call made (a link to the staged file) may go: an existing
            # one may be indexed.
            with contextlib.suppress(OSError):
                if storage.path_for(key).samefile(staged.path):
                    storage.remove_unindexed(key, indexed_keys)
            if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
                raise OutOfResources(f"no space left in the image store: {exc}") from exc
            raise

    def durable() -> None:
        """The file durable at its key. Called by _index before it writes anything, so
        that the lookups before its first write wait on the database while the disk
        syncs the file (publishing ahead), and nothing is indexed before that; and before
        any answer."""
        nonlocal created, synced
        if synced:
            return
        created = published(ahead.result if ahead is not None else lambda: storage.publish(staged, key))
        synced = True

    def linked() -> None:
        """The file whole at its key, its fsyncs perhaps still under way: called by _index
        instead of durable() before the statement that may write the row with an
        UnsyncedFile row, so that the commit's WAL flush and the file's fsync wait on the
        disk at once (when it writes nothing, durable() follows before any other write)."""
        nonlocal created
        if ahead is None:
            durable()
            return
        if created is None:
            created = published(ahead.linked)

    # On the object store the name comes with the PUT's acknowledgement: nothing to overlap.
    overlap = ahead is not None and storage.backend_name() == "local"
    try:
        # `unsynced`: the row was committed with an UnsyncedFile row (before the fsync returned).
        instance, study_created, unsynced = _index(
            tags, staged, key, transfer_syntax_uid, modality, durable, linked if overlap else None
        )
        try:
            durable()
        except BaseException:
            if unsynced and not synced:
                # Committed, and its file will never be durable: the row goes again (a
                # crash here leaves it to resolve_unsynced_files, at the next start).
                with contextlib.suppress(Exception):
                    _unindex_unsynced(instance.pk, key)
            raise
        if unsynced:
            _file_synced(instance.pk)
    except IntegrityError:
        # This SOP Instance UID is indexed already: a re-send, a correction, or another
        # association a moment ago. Its row may have been committed before its file's
        # fsync returned: this file (the same one for the same content) durable, then
        # the answer.
        durable()
        existing = Instance.objects.filter(sop_instance_uid=tags.sop_instance_uid).first()
        if existing is None:
            if created:
                storage.remove_unindexed(key, indexed_keys)
            raise
        kept = False
        try:
            result = _repeat(existing, tags, staged, key, transfer_syntax_uid, modality)
            kept = result.outcome in (IngestOutcome.REPLACED, IngestOutcome.PENDING_CORRECTION)
            return result
        finally:
            # A name this call made is kept only when the index now points at it.
            if created and not kept and existing.storage_key != key:
                storage.remove_unindexed(key, indexed_keys)
            elif created is False and kept:
                storage.keep_published(staged, key)
    except BaseException:
        if created:
            storage.remove_unindexed(key, indexed_keys)
        raise
    if created is False:
        # The name was there already: one that another association made and may be
        # removing, having refused its own instance (storage.remove_unindexed).
        storage.keep_published(staged, key)
    return IngestResult(IngestOutcome.STORED, instance, study_created)


def _record_conflict(
    conflict: IdentityConflict,
    tags: IndexedTags,
    modality: Modality,
    channel: str,
    association: UUID | None,
    user: User | None,
) -> None:
    """The administrators' record of a refusal. Never raises: the sender's answer is the
    refusal whether or not the record could be written."""
    logger.warning(
        "instance %s from %s refused (%s): %s", tags.sop_instance_uid, modality.ae_title, conflict.reason, conflict
    )
    try:
        IngestConflict.objects.create(
            at=timezone.now(),
            reason=conflict.reason,
            channel=channel,
            facility_id=modality.facility_id,
            modality=modality,
            ae_title=modality.ae_title[:16],
            user=user,
            association=association,
            sop_instance_uid=tags.sop_instance_uid,
            study_uid=tags.study_uid,
            series_uid=tags.series_uid,
            patient_id=_text(tags.values, "PatientID", 64),
            detail=str(conflict)[:255],
        )
    except Exception:
        logger.exception("could not record the refusal of %s", tags.sop_instance_uid)


def _repeat(
    existing: Instance,
    tags: IndexedTags,
    staged: storage.StagedFile,
    key: str,
    transfer_syntax_uid: str,
    modality: Modality,
) -> IngestResult:
    """A SOP Instance UID that is indexed already: the same content is a duplicate; other
    content is a correction, which the overwrite policy applies, keeps pending or refuses."""
    home = (
        Series.objects.filter(pk=existing.series_id)
        .values_list("series_uid", "study__study_uid", "study__facility_id", "study_id")
        .first()
    )
    assert home is not None
    series_uid, study_uid, facility_id, study_pk = home
    if facility_id != modality.facility_id or (series_uid, study_uid) != (tags.series_uid, tags.study_uid):
        # Nothing is said about where it is: it may be another township's.
        raise InstanceElsewhere(
            f"SOP Instance UID {tags.sop_instance_uid} is indexed in series {series_uid} of study {study_uid}"
            f" (facility {facility_id})"
        )
    if existing.sha256 == staged.sha256:
        logger.info("instance %s re-sent by %s with identical content", existing.sop_instance_uid, modality.ae_title)
        return IngestResult(IngestOutcome.DUPLICATE, existing)
    return _correct(existing, study_pk, tags, staged, key, transfer_syntax_uid, modality)


def _correct(
    existing: Instance,
    study_pk: int,
    tags: IndexedTags,
    staged: storage.StagedFile,
    key: str,
    transfer_syntax_uid: str,
    modality: Modality,
) -> IngestResult:
    policy = OverwritePolicy(settings.DICOM_OVERWRITE_POLICY)
    now = timezone.now()
    with transaction.atomic():
        # The study row is locked so that a signature cannot land between the check and
        # the change (signing writes Study.report_signed_at).
        study = (
            Study.objects.select_for_update()
            .only("pk", "study_uid", "facility_id", "modality_id", "report_signed_at")
            .get(pk=study_pk)
        )
        signed = study.report_signed_at is not None
        if policy == OverwritePolicy.NEVER:
            raise CorrectionRefused(f"{existing.sop_instance_uid}: other content, and the overwrite policy is never")
        if policy == OverwritePolicy.SAME_SOURCE and study.modality_id != modality.pk:
            raise CorrectionRefused(
                f"{existing.sop_instance_uid}: other content from {modality.ae_title}, "
                "not the modality that sent the study"
            )
        detail: dict[str, Any] = {
            "sop_instance_uid": existing.sop_instance_uid,
            "ae_title": modality.ae_title,
            "sha256": staged.sha256,
            "stored_sha256": existing.sha256,
        }
        if signed:
            if existing.versions.filter(state=InstanceVersion.State.PENDING, sha256=staged.sha256).exists():
                return IngestResult(IngestOutcome.DUPLICATE, existing)
            InstanceVersion.objects.create(
                instance=existing,
                state=InstanceVersion.State.PENDING,
                storage_key=key,
                sha256=staged.sha256,
                size=staged.size,
                transfer_syntax_uid=transfer_syntax_uid,
                source_ae=modality.ae_title[:16],
                received_at=now,
            )
            Study.objects.filter(pk=study_pk).update(pending_corrections=F("pending_corrections") + 1)
            audit("cloudpacs.instance.correction_pending", obj=study, facility=modality.facility, **detail)
            logger.warning(
                "instance %s corrected by %s after the report was signed: kept as a pending correction",
                existing.sop_instance_uid,
                modality.ae_title,
            )
            return IngestResult(IngestOutcome.PENDING_CORRECTION, existing)
        InstanceVersion.objects.create(
            instance=existing,
            state=InstanceVersion.State.PRIOR,
            storage_key=existing.storage_key,
            sha256=existing.sha256,
            size=existing.size,
            transfer_syntax_uid=existing.transfer_syntax_uid,
            received_at=existing.received_at,
        )
        values = tags.values
        changes: dict[str, Any] = {
            "storage_key": key,
            "sha256": staged.sha256,
            "size": staged.size,
            "sop_class_uid": tags.sop_class_uid,
            "transfer_syntax_uid": transfer_syntax_uid,
            "instance_number": _int(values, "InstanceNumber"),
            "rows": _int(values, "Rows"),
            "columns": _int(values, "Columns"),
            "number_of_frames": _int(values, "NumberOfFrames"),
        }
        Instance.objects.filter(pk=existing.pk).update(**changes)
        # Its WADO-RS metadata described the old content.
        InstanceMetadata.objects.filter(instance_id=existing.pk).delete()
        Study.objects.filter(pk=study_pk).update(
            images_changed_at=now,
            status=Case(
                When(status=Study.Status.ARRIVED, then=Value(Study.Status.UPDATED)),
                default=F("status"),
            ),
        )
        audit("cloudpacs.instance.replaced", obj=study, facility=modality.facility, **detail)
    logger.warning(
        "instance %s replaced by a correction from %s (sha256 %s, prior %s kept)",
        existing.sop_instance_uid,
        modality.ae_title,
        staged.sha256[:16],
        existing.sha256[:16],
    )
    for field, value in changes.items():
        setattr(existing, field, value)
    return IngestResult(IngestOutcome.REPLACED, existing)


def _check_pixel_data_complete(
    ds: Dataset, path: Path, transfer_syntax_uid: str, attributes: dict[str, Any] | None = None
) -> None:
    """Refuse pixel data that no viewer could show: encapsulated pixel data must be a run
    of well-formed items ending in its sequence delimiter (wherever it lies: Data Set
    Trailing Padding or Digital Signatures may follow it); native pixel data must be as
    long as its image attributes say. A dataset cut short on the wire fails either check.
    The index never reads pixel data, so neither check reads it into memory. `attributes`,
    the image attributes by keyword when converted already (`ds` otherwise)."""
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
        if _syntax(transfer_syntax_uid).is_encapsulated and tag == PIXEL_DATA_TAGS[0][0]:
            if not undefined:
                raise UnreadableDataset(f"encapsulated pixel data has a defined length ({length} bytes)")
            if offset is not None:
                _check_encapsulated(path, offset, transfer_syntax_uid != ExplicitVRBigEndian)
            return
        _check_native_length(ds if attributes is None else attributes, length, bits)
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


def _check_native_length(ds: Dataset | dict[str, Any], length: int, bits_allocated: int | None) -> None:
    expected = native_pixel_data_length(ds, bits_allocated)
    frames = int(ds.get("NumberOfFrames") or 1)
    # Excess padding after the frames, less than a frame: PS3.5 8.1.1 allows only the one
    # pad byte, but its note asks receivers to accept more, which older applications send
    # (pydicom's MR_small_padded: 128 bytes); the frames lie where the attributes say.
    # More than a frame, or native YBR_FULL_422 at three values a pixel, says that the
    # attributes do not describe the data.
    padding = length - expected
    if str(ds.get("PhotometricInterpretation") or "").strip() == "YBR_FULL_422":
        padded = padding in (0, expected % 2)
    else:
        padded = 0 <= padding < max(expected // frames, 2)
    if not padded:
        raise UnreadableDataset(
            f"pixel data is {length} bytes, not {expected}: {ds.get('Rows')} rows x {ds.get('Columns')} "
            f"columns x {ds.get('SamplesPerPixel') or 1} samples x {bits_allocated or ds.get('BitsAllocated')} bits "
            f"x {ds.get('NumberOfFrames') or 1} frames, {ds.get('PhotometricInterpretation') or 'no photometric'}"
        )


# The lowest group a stored dataset may begin with: SOP Common (0008,0016) and (0008,0018)
# are in every instance, and nothing may come before group 0008 (0002 is the File Meta
# Information's, 0004 a DICOMDIR's, and the odd 0001-0007 are not private groups).
FIRST_GROUP = 0x0008


def _check_byte_order(path: Path, offset: int, transfer_syntax_uid: str) -> None:
    """Raise UnreadableDataset when the dataset is encoded in the other byte order than
    its transfer syntax says: its first tag's group, read as declared, is past group 0008
    while read the other way it is not (big endian data in a little endian context is
    read as group 0800). pydicom takes the transfer syntax's byte order on trust."""
    syntax = _syntax(transfer_syntax_uid)
    if not syntax.is_transfer_syntax or syntax.is_deflated:
        return
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            head = stream.read(2)
    except OSError:
        return
    if len(head) < 2:
        return
    declared, other = ("<H", ">H") if syntax.is_little_endian else (">H", "<H")
    if struct.unpack(declared, head)[0] > FIRST_GROUP >= struct.unpack(other, head)[0]:
        found, said = ("big", "little") if syntax.is_little_endian else ("little", "big")
        raise UnreadableDataset(f"the dataset is encoded {found} endian, not {said} endian as {syntax.name} says")


# What the pixel data's checks read besides the indexed attributes.
PIXEL_ATTRIBUTES = [
    (keyword, Tag(keyword)) for keyword in ("SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation")
]


def _lean_value(ds: Dataset, elements: _Elements, done: set[BaseTag], keyword: str, tag: BaseTag) -> Any:
    """ds.get(keyword), converted from the element's bytes by cloudpacs.tagvalues where that
    is certain (its tag then added to `done`: decodable, its element left raw), by pydicom
    otherwise."""
    raw = ds._dict.get(tag)
    if raw is None:
        return None
    if isinstance(raw, RawDataElement) and not (raw.value is None and raw.length != 0):
        value = tagvalues.value(raw, ds.original_character_set or ds._character_set)
        if value is not tagvalues.FALLBACK:
            done.add(tag)
            return value
    return elements.value(keyword, tag)


def _lean_names(ds: Dataset) -> dict[str, tuple[str, str, str, str]]:
    """The person names' groups as person_name_groups gives them, from the elements' bytes
    where tagvalues can, through pydicom otherwise."""
    encodings = ds.original_character_set or ds._character_set
    names: dict[str, tuple[str, str, str, str]] = {}
    for keyword, tag in PERSON_NAME_TAG_NUMBERS:
        raw = ds._dict.get(tag)
        if raw is None:
            names[keyword] = ("", "", "", "")
            continue
        groups = tagvalues.person_name(raw, encodings) if isinstance(raw, RawDataElement) else None
        if groups is None:
            names[keyword] = person_name_groups(ds, keyword, _raw_bytes(ds, keyword))
            continue
        trimmed = tuple(trimmed_name_group(group) for group in groups)
        names[keyword] = ("=".join(trimmed).rstrip("=")[:324], trimmed[0][:108], trimmed[1][:108], trimmed[2][:108])
    return names


def _iso2022(ds: Dataset) -> bool:
    """Whether the dataset declares ISO 2022 code extensions (ISO 2022 IR 58 has a decoder
    of its own here, person_name_groups), read from the element's bytes."""
    raw: Any = ds._dict.get(SPECIFIC_CHARACTER_SET)
    data = raw.value if isinstance(raw, RawDataElement) else getattr(raw, "value", None)
    if isinstance(data, bytes):
        return b"ISO 2022" in data
    return data is not None and "ISO 2022" in str(data)


def _read_indexed_tags(
    ds: Dataset, path: Path, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, channel: str
) -> IndexedTags:
    """The indexed values of a dataset read by _read_dataset from `path`, every other
    value decoded too (or known decodable), and the dataset checked."""
    pixel: dict[str, Any] | None = None
    try:
        elements = _Elements(ds)
        if elements.lean and tagvalues.lean() and not _iso2022(ds):
            done: set[BaseTag] = set()
            values = {keyword: _lean_value(ds, elements, done, keyword, tag) for keyword, tag in INDEXED_TAG_NUMBERS}
            _decode_every_element(ds, elements, done)
            # After the check of every element, as pydicom's path reads them (a refusal
            # names the same element).
            pixel = {keyword: values[keyword] for keyword in ("Rows", "Columns", "NumberOfFrames")}
            pixel.update((keyword, _lean_value(ds, elements, done, keyword, tag)) for keyword, tag in PIXEL_ATTRIBUTES)
        else:
            raw_names = {keyword: _raw_bytes(ds, keyword) for keyword in PERSON_NAME_TAGS}
            # Touch every indexed value now, so that a broken element fails here.
            values = {keyword: elements.value(keyword, tag) for keyword, tag in INDEXED_TAG_NUMBERS}
            # And every other one but bulk data: the viewer, WADO metadata and rendering read
            # them later, and an element that cannot be decoded must not be archived.
            _decode_every_element(ds, elements)
    except Exception as exc:
        raise UnreadableDataset(f"cannot parse the dataset: {type(exc).__name__}: {exc}") from exc
    if not len(ds):
        # pydicom keeps nothing (and only warns) when the file ends inside an element of
        # undefined length: encapsulated pixel data that was cut short on the wire.
        raise UnreadableDataset("truncated: the dataset ends inside an element of undefined length")
    _check_encoding(ds, transfer_syntax_uid)
    _check_pixel_data_complete(ds, path, transfer_syntax_uid, pixel)

    def uid(keyword: str) -> str:
        value = values.get(keyword)
        text = str(value).strip() if value is not None else ""
        if not text:
            raise MissingIdentifier(f"{keyword} is missing")
        if len(text) > 64 or not UID_CHARACTERS.fullmatch(text):
            raise MissingIdentifier(f"{keyword} {text[:70]!r} is not a valid UID")
        return text

    dataset_class = uid("SOPClassUID")
    dataset_instance = uid("SOPInstanceUID")
    study_uid = uid("StudyInstanceUID")
    series_uid = uid("SeriesInstanceUID")
    # What announced the dataset: a C-STORE's presentation context and request, or the File
    # Meta Information of a Part 10 file sent over the web (PS3.10 7.1: its Media Storage
    # SOP Class and Instance UIDs are the dataset's). Refused alike when it says otherwise.
    web = channel == IngestConflict.Channel.STOW
    if dataset_class != sop_class_uid:
        announced = "the file meta's" if web else "the presentation context's"
        raise SOPClassMismatch(f"SOPClassUID is not {announced}: dataset {dataset_class}, {sop_class_uid}")
    if dataset_instance != sop_instance_uid:
        announced = "the file meta's" if web else "the request's"
        raise MissingIdentifier(f"SOPInstanceUID is not {announced}: dataset {dataset_instance}, {sop_instance_uid}")
    if pixel is not None:
        names = _lean_names(ds)
    else:
        names = {keyword: person_name_groups(ds, keyword, raw_names.get(keyword)) for keyword in PERSON_NAME_TAGS}
    return IndexedTags(dataset_class, dataset_instance, study_uid, series_uid, values, names)


def _check_encoding(ds: Dataset, transfer_syntax_uid: str) -> None:
    """Refuse a dataset not encoded in its transfer syntax: pydicom reads implicit VR where
    explicit VR was declared (and only warns), but dcmtk, the viewer's parser and every
    other reader of the stored file do not (pydicom's SC_rgb_jpeg: JPEG Baseline, whose
    dataset is implicit VR). The first element not decoded yet says how it was read."""
    syntax = _syntax(transfer_syntax_uid)
    # The elements as stored, in order (iterating the dataset itself would decode each).
    for raw in ds.values():
        if not isinstance(raw, RawDataElement):
            continue
        if raw.is_implicit_VR != syntax.is_implicit_VR or raw.is_little_endian != syntax.is_little_endian:
            found = (
                ("implicit" if raw.is_implicit_VR else "explicit")
                + " VR "
                + ("little" if raw.is_little_endian else "big")
                + " endian"
            )
            raise UnreadableDataset(f"the dataset is encoded in {found}, not as its transfer syntax {syntax} says")
        return


def _decode_every_element(ds: Dataset, elements: _Elements | None = None, done: set[BaseTag] | None = None) -> None:
    """Decode each element's value, in sequences too, except deferred bulk values and
    pixel data (kept raw, for _check_pixel_data_complete to see how it was encoded).
    With `done` (the tags converted by cloudpacs.tagvalues), an element that is among
    them, or that tagvalues knows pydicom decodes, is left as read."""
    elements = elements or _Elements(ds)
    # The elements as stored (raw or decoded), without decoding them.
    raw: Any
    for tag, raw in list(ds.items()):
        if tag in PIXEL_DATA_TAG_SET:
            continue
        # A deferred bulk value is a raw element whose value was not read. A decoded
        # element whose value is None is an empty one (an empty Instance Number, say, a
        # Type 2 attribute) and has no length to look at.
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length != 0:
            continue
        if done is not None and isinstance(raw, RawDataElement) and (tag in done or tagvalues.surely_decodable(raw)):
            continue
        element = elements.element(tag)
        if element.VR == "SQ":
            for item in element.value:
                _decode_every_element(item)


# What _Elements does in place of pydicom's Dataset: an element read and converted as
# Dataset.__getitem__ converts it (its __setitem__ where that does more than store it),
# and a value by keyword as Dataset.get gives it (through __getattr__).
DATASET_PIN = pinning.Pin(
    "3.0.2",
    (Dataset.__getitem__, "7fd4ac450b402cf86a3df3f8ce7889b457d65a3fb7183662327e085824cc0c82"),
    (Dataset.__setitem__, "c05f425a71ca8e7afd622120b257dea25895ad7335a28d96af6f09997b35d583"),
    (Dataset.__getattr__, "9d44723e9a6e63da4ee22efd71fbdc4b701e6cb81377297e45fcb37a34e99f52"),
    (Dataset.get, "011244223d70d70ba4c74883d4f028bf507d86ebe6c7aec5181f613662ed16f1"),
    otherwise="a received dataset's elements are converted through pydicom's Dataset",
    package=pydicom,
)
SPECIFIC_CHARACTER_SET = Tag(0x00080005)
# What a UID the index keys on may hold (ASCII letters and digits, dots; PS3.5 9.1 allows
# only digits and dots, but some consoles send letters).
UID_CHARACTERS = re.compile(r"[0-9A-Za-z.]+", re.ASCII)


class _Elements:
    """The elements of a dataset just read, each converted once as `ds[tag]` would convert
    it, without what each `ds[tag]` and `ds.get(keyword)` costs around the conversion (a
    tag built from the key, the character set looked up again, the element stored
    through __setitem__ and read back three times): about half of the time spent on the
    tags of a small CT image, where the dataset has some thirty elements. On another
    pydicom (DATASET_PIN) it is `ds[tag]` and `ds.get(keyword)`."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.lean = DATASET_PIN.compatible()
        self._encoding: Any = None

    def element(self, tag: BaseTag) -> DataElement:
        ds = self.ds
        if not self.lean:
            return ds[tag]
        stored = ds._dict[tag]
        if isinstance(stored, DataElement):
            return stored
        if stored.value is None and stored.length != 0:
            # A deferred value, read from the file.
            return ds[tag]
        if tag == SPECIFIC_CHARACTER_SET:
            encoding = default_encoding
        else:
            if self._encoding is None:
                self._encoding = ds.original_character_set or ds._character_set
            encoding = self._encoding
        element = convert_raw_data_element(stored, encoding=encoding, ds=ds)
        if element.VR == VR.SQ or tag.is_private:
            # What __setitem__ does besides storing it: a private element's creator, a
            # sequence's value made a Sequence.
            ds[tag] = element
            if element.VR == VR.SQ:
                ds._set_pixel_representation(element)
        else:
            ds._dict[tag] = element
        if element.VR in AMBIGUOUS_VR:
            element = cast(DataElement, correct_ambiguous_vr_element(element, ds, stored[6]))
            ds[tag] = element
        return element

    def value(self, keyword: str, tag: BaseTag) -> Any:
        """ds.get(keyword)."""
        if not self.lean:
            return self.ds.get(keyword)
        if tag not in self.ds._dict:
            return None
        try:
            return self.element(tag).value
        except AttributeError:
            return None


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


def trimmed_name_group(group: str) -> str:
    """A PN component group without its trailing empty components: `Zhou^Li^^^` is
    `Zhou^Li` (PS3.5 6.2.1.1: trailing component delimiters may be left out), and `^^^^`
    is no name, so exact matching finds either form."""
    return group.rstrip("^ ")


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
        groups = tuple(trimmed_name_group(group) for group in (value.alphabetic, value.ideographic, value.phonetic))
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
    durable: Callable[[], None] = lambda: None,
    linked: Callable[[], None] | None = None,
) -> tuple[Instance, bool, bool]:
    """The instance's row and, when new, its series', study's and patient's; whether it
    made the study, and whether the row was committed with an UnsyncedFile row (before the
    file was durable). `durable` is called before the first write (the file durable
    first, then the index). The series'
    and the study's instance counters, the study's last arrival and the status of a late
    instance are not written here: the sweep folds them (cloudpacs.counts), and readers
    count the instances it has not folded yet. With `linked`, an instance of a known
    series is written with its UnsyncedFile row once the file is whole at its key
    (`linked()`), while its fsync may still run: the caller answers only once `durable()`
    has returned too. The first instance of a series and one that changes its study
    still wait for `durable()`: a row found unsynced after a crash is then only ever an
    instance to take back (_unindex_unsynced)."""
    ds = tags.values
    now = timezone.now()
    facility = modality.facility
    name = tags.names["PatientName"][0]
    patient_id = _text(ds, "PatientID", 64)
    issuer = _text(ds, "IssuerOfPatientID", 64)
    series_modality = _text(ds, "Modality", 16).upper()
    institution = _text(ds, "InstitutionName", 128)
    station = _text(ds, "StationName", 64)
    row = {
        "sop_instance_uid": tags.sop_instance_uid,
        "sop_class_uid": tags.sop_class_uid,
        "instance_number": _int(ds, "InstanceNumber"),
        "transfer_syntax_uid": transfer_syntax_uid,
        "storage_key": key,
        "size": staged.size,
        "sha256": staged.sha256,
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "number_of_frames": _int(ds, "NumberOfFrames"),
        "received_at": now,
    }
    study_changes: dict[str, Any] = {}
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        # Most instances join a series that exists and change nothing of their study: on
        # PostgreSQL their row is one statement (one round trip), which looks the series
        # up, compares what the identity rules compare and writes the row only when they
        # pass as written; it commits by itself and writes no other row, so that
        # associations storing one series never wait for each other's commits. Read
        # Committed gives the lookup inside a transaction no more than outside it.
        unsynced = linked is not None
        if linked is not None:
            linked()
        else:
            durable()
        joining = _Joining(tags.series_uid, facility.pk, tags.study_uid, patient_id, issuer, name, series_modality)
        pk, known = _insert_autocommit(row, joining, unsynced=unsynced)
        if pk is None and known is not None:
            # Not as written: the rules say why (a conflict raises), or that the name
            # differs in its form only.
            series_pk, study_pk, modalities_in_study = _join_known_series(
                known, tags, facility.pk, patient_id, issuer, name, study_changes
            )
            if not study_changes and _new_modalities(modalities_in_study, series_modality) is None:
                pk, _ = _insert_autocommit(row, series_pk, unsynced=unsynced)
            study_changes.clear()
        if pk is not None:
            assert known is not None
            logger.debug("stored %s from %s as %s", tags.sop_instance_uid, modality.ae_title, key)
            return _instance(pk, known[0], row), False, unsynced
    durable()
    with transaction.atomic():
        # Most instances join a series that exists: one lookup finds it, its study and
        # what the identity rules compare (the study's facility, UID and patient).
        known = _series_identity(tags.series_uid)
        study_created = series_created = False
        if known is not None:
            series_pk, study_pk, modalities_in_study = _join_known_series(
                known, tags, facility.pk, patient_id, issuer, name, study_changes
            )
        else:
            found = Study.objects.filter(study_uid=tags.study_uid).values_list("pk", *_STUDY_FIELDS).first()
            if found is not None:
                study_pk, *study_identity = found
                modalities_in_study = _check_study_identity(
                    tags, facility.pk, patient_id, issuer, name, study_identity, study_changes
                )
            else:
                study_pk, study_created = _create_study(tags, modality, patient_id, issuer, now)
                modalities_in_study = ""
            series, series_created = Series.objects.get_or_create(
                series_uid=tags.series_uid,
                defaults={
                    "study_id": study_pk,
                    "modality": series_modality,
                    "series_number": _int(ds, "SeriesNumber"),
                    "description": _text(ds, "SeriesDescription", 128),
                    "body_part_examined": _text(ds, "BodyPartExamined", 64),
                    "station_name": station,
                    "institution_name": institution,
                    "manufacturer": _text(ds, "Manufacturer", 64),
                },
            )
            if not series_created and series.study_id != study_pk:
                # Another association made this series a moment ago, in another study.
                raise SeriesOfAnotherStudy(f"series {tags.series_uid} was just stored in study {series.study_id}")
            series_pk = series.pk
        pk = _insert_instance(row, series_pk)
        # Once per series, not per instance: its study's number of series and modalities.
        new_modalities = _new_modalities(modalities_in_study, series_modality)
        if series_created:
            study_changes["number_of_series"] = F("number_of_series") + 1
        if new_modalities is not None:
            study_changes["modalities_in_study"] = new_modalities
        if study_changes:
            Study.objects.filter(pk=study_pk).update(**study_changes)
    logger.debug("stored %s from %s as %s", tags.sop_instance_uid, modality.ae_title, key)
    return _instance(pk, series_pk, row), study_created, False


def _join_known_series(
    known: tuple[Any, ...],
    tags: IndexedTags,
    facility_pk: int,
    patient_id: str,
    issuer: str,
    name: str,
    study_changes: dict[str, Any],
) -> tuple[int, int, str]:
    """(series, study, the study's modalities) for an instance of a series the index
    holds (`known`, its row of _SERIES_FIELDS), after the identity rules."""
    series_pk, study_pk, study_uid, *study_identity = known
    if study_identity[0] != facility_pk:
        raise SeriesOfAnotherFacility(
            f"series {tags.series_uid} is in study {study_uid} of facility {study_identity[0]}"
        )
    if study_uid != tags.study_uid:
        raise SeriesOfAnotherStudy(f"series {tags.series_uid} is in study {study_uid}, not {tags.study_uid}")
    modalities = _check_study_identity(tags, facility_pk, patient_id, issuer, name, study_identity, study_changes)
    return series_pk, study_pk, modalities


def _new_modalities(modalities_in_study: str, series_modality: str) -> str | None:
    """The study's Modalities in Study with the series' added, or None when it has it."""
    modalities = set(filter(None, modalities_in_study.split("\\")))
    if series_modality and series_modality not in modalities:
        return "\\".join(sorted(modalities | {series_modality}))[:64]
    return None


def _instance(pk: int, series_pk: int, row: dict[str, Any]) -> Instance:
    """The Instance the index now holds, as the ORM would have returned it from create()."""
    instance = Instance(pk=pk, series_id=series_pk, **row)
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


# The index's statements for every instance, compiled once per database vendor and shape:
# building them with the ORM each time cost more than running them.
_INSTANCE_COLUMNS = [
    "sop_instance_uid",
    "sop_class_uid",
    "series",
    "instance_number",
    "transfer_syntax_uid",
    "storage_key",
    "size",
    "sha256",
    "rows",
    "columns",
    "number_of_frames",
    "received_at",
]
_INSERT_SQL: dict[str, str] = {}


def _column(model: Any, name: str) -> str:
    return str(connection.ops.quote_name(model._meta.get_field(name).column))


def _instance_params(row: dict[str, Any], series_pk: int, *, without_series: bool = False) -> list[Any]:
    values = {**row, "series": series_pk, "received_at": connection.ops.adapt_datetimefield_value(row["received_at"])}
    return [values[name] for name in _INSTANCE_COLUMNS if not (without_series and name == "series")]


def _insert_instance_sql() -> str:
    sql = _INSERT_SQL.get(connection.vendor)
    if sql is None:
        quote = connection.ops.quote_name
        columns = ", ".join(_column(Instance, name) for name in _INSTANCE_COLUMNS)
        # The series' id read from its row by the statement that writes the instance: NULL,
        # refused, when the series is gone (there is no foreign key; migration 0018).
        series_id = _column(Series, "id")
        series = f"(SELECT {series_id} FROM {quote(Series._meta.db_table)} WHERE {series_id} = %s)"  # noqa: S608
        placeholders = ", ".join(series if name == "series" else "%s" for name in _INSTANCE_COLUMNS)
        # Only the model's own table and column names go into the text; values are parameters.
        sql = f"INSERT INTO {quote(Instance._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
        _INSERT_SQL[connection.vendor] = sql
    return sql


def _insert_instance(row: dict[str, Any], series_pk: int) -> int:
    """The instance's row, as Instance.objects.create() writes it; its primary key."""
    sql = _insert_instance_sql()
    returning = connection.features.can_return_columns_from_insert
    with connection.cursor() as cursor:
        if returning:
            cursor.execute(f"{sql} RETURNING {_column(Instance, 'id')}", _instance_params(row, series_pk))
            return int(cursor.fetchone()[0])
        cursor.execute(sql, _instance_params(row, series_pk))
        return int(cursor.lastrowid)


def _prepared_cursor() -> Any:
    """Django's cursor for the statements run for every instance (the series lookup, the
    one statement of a known series' instance). On PostgreSQL its parameters are bound by
    the server and each statement is prepared on the connection the first time it runs:
    PostgreSQL then parses and plans the two statements once per association instead of
    once per instance (a backend's CPU per instance 0.96-1.35 ms before, 0.56-0.64 ms
    after, loaded: docs/benchmarks-ingest.md run 19). Django's own cursors bind on the
    client and never prepare, whatever the connection's threshold, so no other statement
    changes. The wrapper stays Django's: CaptureQueriesContext, execute_wrapper and its
    error translation see these statements as before. (A pooler in transaction mode
    between the receiver and PostgreSQL would need its prepared-statement support on.)"""
    cursor = connection.cursor()
    if connection.vendor == "postgresql":
        raw = cursor.cursor.connection
        if raw.prepare_threshold is None:
            # Django leaves it unset (never prepare); 0: prepare at the first run.
            raw.prepare_threshold = 0
        cursor.cursor.close()
        cursor.cursor = _preparing_cursor_class()(raw)
    return cursor


_PREPARING_CURSOR: list[Any] = []


def _preparing_cursor_class() -> Any:
    """psycopg's server-binding cursor, which also names the statement it ran when that
    statement was prepared already: Django's debug log (and CaptureQueriesContext) reads
    the last query from the cursor, which psycopg sets only when it sends the text."""
    if not _PREPARING_CURSOR:
        import psycopg

        class PreparingCursor(psycopg.Cursor):  # type: ignore[type-arg]
            def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
                self._query = pgq
                super()._send_query_prepared(name, pgq, binary=binary)

        _PREPARING_CURSOR.append(PreparingCursor)
    return _PREPARING_CURSOR[0]


class _Joining(NamedTuple):
    """An instance's series, by its UID, and what the identity rules compare with the
    series' study when the instance joins it (_join_known_series)."""

    series_uid: str
    facility_pk: int
    study_uid: str
    patient_id: str
    issuer: str
    name: str
    modality: str


_INSERT_AUTOCOMMIT_SQL: dict[tuple[bool, bool], str] = {}


def _insert_autocommit(
    row: dict[str, Any], series: int | _Joining, *, unsynced: bool = False
) -> tuple[int | None, tuple[Any, ...] | None]:
    """PostgreSQL: the instance's row, one statement that writes no other row (its
    series' and study's counters are the sweep's fold, cloudpacs.counts); the instance's
    primary key, or None when it wrote nothing. With `unsynced`, its UnsyncedFile row too,
    and the UnsyncedFile rows of the files synced since the last such statement go
    (_file_synced): no statement of their own (data-modifying WITH: each part runs once
    and to completion, all or nothing).

    `series` is the series' primary key, or (_Joining) its UID and what the identity rules
    compare: the statement then looks the series up itself (the query of _series_identity)
    and writes the row only when the instance joins it as it is: the study's facility, UID
    and Patient ID (and issuer, when both have one) the instance's, its name the study's as
    written or the study flagged already, the series' modality among the study's. It then
    also returns the series' row of _SERIES_FIELDS (None: no such series), for the rules
    to say what differs. Either way the row names a series that exists when the statement
    runs, which no deletion of a series can interleave with (migration 0018)."""
    joining = isinstance(series, _Joining)
    sql = _INSERT_AUTOCOMMIT_SQL.get((joining, unsynced))
    if sql is None:
        sql = _insert_autocommit_sql(joining, unsynced)
        _INSERT_AUTOCOMMIT_SQL[(joining, unsynced)] = sql
    params: list[Any]
    if isinstance(series, _Joining):
        params = [series.series_uid]
        params.extend(_instance_params(row, 0, without_series=True))
        params.extend(
            [series.facility_pk, series.study_uid, series.patient_id, series.issuer, series.issuer, series.name]
        )
        params.extend([series.modality, series.modality])
    else:
        params = _instance_params(row, series)
    synced = _take_synced_files() if unsynced else []
    if unsynced:
        params.append(synced)
    try:
        with _prepared_cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchone()
    except BaseException:
        _file_synced(*synced)
        raise
    if not joining:
        return int(found[0]), None
    if found is None:
        return None, None
    *known, pk = found
    return (int(pk) if pk is not None else None), tuple(known)


def _insert_autocommit_sql(joining: bool, unsynced: bool) -> str:
    # Only compiled statements of the models' own names go into the text (S608).
    instance_id = _column(Instance, "id")
    if joining:
        # The series' identity as _series_identity reads it, its columns named here.
        names = ["pk", "study_id", "study_uid", "facility_id", "patient_id", "issuer", "name", "name_conflict"]
        names.append("modalities")
        # The values take the columns' types (a NULL of no type is none of them), the
        # texts the column's own, whose length is checked as in VALUES.
        values = [
            "known.pk" if name == "series" else "%s" if _is_text(name) else f"CAST(%s AS {_db_type(name)})"
            for name in _INSTANCE_COLUMNS
        ]
        columns = ", ".join(_column(Instance, name) for name in _INSTANCE_COLUMNS)
        table = connection.ops.quote_name(Instance._meta.db_table)
        new_instance = (
            f"INSERT INTO {table} ({columns}) SELECT {', '.join(values)} FROM known"  # noqa: S608
            " WHERE known.facility_id = %s AND known.study_uid = %s AND known.patient_id = %s"
            " AND (%s = '' OR known.issuer = '' OR known.issuer = %s)"
            " AND (known.name_conflict OR known.name = %s)"
            " AND (%s = '' OR %s = ANY(string_to_array(known.modalities, chr(92))))"
        )
        parts = [f"known ({', '.join(names)}) AS ({_series_identity_sql()})"]
        result = f"SELECT known.*, (SELECT {instance_id} FROM new_instance) FROM known"  # noqa: S608
    else:
        new_instance = _insert_instance_sql()
        parts = []
        result = f"SELECT {instance_id} FROM new_instance"  # noqa: S608
    parts.append(f"new_instance AS ({new_instance} RETURNING {instance_id})")
    if unsynced:
        unsynced_table = connection.ops.quote_name(UnsyncedFile._meta.db_table)
        unsynced_id = _column(UnsyncedFile, "instance")
        parts.append(
            f"unsynced AS (INSERT INTO {unsynced_table} ({unsynced_id})"  # noqa: S608
            f" SELECT {instance_id} FROM new_instance)"
        )
        parts.append(f"synced AS (DELETE FROM {unsynced_table} WHERE {unsynced_id} = ANY(%s::bigint[]))")  # noqa: S608
    return f"WITH {', '.join(parts)} {result}"


def _is_text(name: str) -> bool:
    return isinstance(Instance._meta.get_field(name), CharField)


def _db_type(name: str) -> str:
    return str(Instance._meta.get_field(name).db_type(connection))


# What the identity rules compare, read with the series (or the study) in one query.
_STUDY_FIELDS = [
    "facility_id",
    "patient__patient_id",
    "patient__issuer",
    "patient_name_received",
    "patient_name_conflict",
    "modalities_in_study",
]
_SERIES_FIELDS = ["pk", "study_id", "study__study_uid", *(f"study__{field}" for field in _STUDY_FIELDS)]
_SERIES_SQL: dict[str, str] = {}


def _series_identity_sql() -> str:
    """The query of a series' row of _SERIES_FIELDS by its UID (one parameter). The ORM
    compiles it once per database vendor and the SQL is reused: compiling it each time
    cost more than running it (about 0.5 ms of an instance's few on SQLite)."""
    sql = _SERIES_SQL.get(connection.vendor)
    if sql is None:
        query = Series.objects.filter(series_uid="?").values_list(*_SERIES_FIELDS)[:1].query
        sql, params = query.sql_with_params()
        assert params == ("?",)
        _SERIES_SQL[connection.vendor] = sql
    return sql


def _series_identity(series_uid: str) -> tuple[Any, ...] | None:
    """The series' row of _SERIES_FIELDS, or None."""
    with _prepared_cursor() as cursor:
        cursor.execute(_series_identity_sql(), [series_uid])
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def _check_study_identity(
    tags: IndexedTags,
    facility_pk: int,
    patient_id: str,
    issuer: str,
    name: str,
    identity: list[Any],
    study_changes: dict[str, Any],
) -> str:
    """Refuse an instance for a study of another facility or of another patient; flag the
    study when the name differs. Returns the study's modalities."""
    study_facility, study_patient_id, study_issuer, name_received, name_conflict, modalities_in_study = identity
    if study_facility != facility_pk:
        raise StudyOfAnotherFacility(f"study {tags.study_uid} belongs to facility {study_facility}")
    if patient_id != study_patient_id or (issuer and study_issuer and issuer != study_issuer):
        raise PatientMismatch(
            f"study {tags.study_uid} is of Patient ID {study_patient_id!r} (issuer {study_issuer!r}),"
            f" the instance of {patient_id!r} (issuer {issuer!r})"
        )
    if not name_conflict and name != name_received and not same_person_name(name, name_received):
        study_changes["patient_name_conflict"] = True
    return str(modalities_in_study)


def _create_study(
    tags: IndexedTags, modality: Modality, patient_id: str, issuer: str, now: datetime
) -> tuple[int, bool]:
    """A new study, and its patient: the facility's patient of that ID (whose stored
    demographics a new study only completes, never overwrites), or, without an ID, a
    patient of its own."""
    ds = tags.values
    facility = modality.facility
    name, alphabetic, ideographic, phonetic = tags.names["PatientName"]
    patient_fields = {
        "issuer": issuer,
        "name": name,
        "name_alphabetic": alphabetic,
        "name_ideographic": ideographic,
        "name_phonetic": phonetic,
        "name_initials": name_initials(alphabetic, ideographic),
        "birth_date": _date(ds.get("PatientBirthDate")),
        "sex": _text(ds, "PatientSex", 16),
    }
    name_conflict = False
    if not patient_id:
        patient = Patient.objects.create(facility=facility, patient_id="", **patient_fields)
    else:
        patient, created = Patient.objects.get_or_create(
            facility=facility, patient_id=patient_id, defaults=patient_fields
        )
        if not created:
            if issuer and patient.issuer and issuer != patient.issuer:
                raise PatientMismatch(
                    f"Patient ID {patient_id!r} is stored with issuer {patient.issuer!r}, received {issuer!r}"
                )
            name_conflict = bool(name) and bool(patient.name) and not same_person_name(name, patient.name)
            blanks = {
                field: value
                for field, value in patient_fields.items()
                if value and not getattr(patient, field) and not (field.startswith("name") and patient.name)
            }
            if blanks:
                Patient.objects.filter(pk=patient.pk).update(**blanks)
    _record_identifiers(patient, ds.get("OtherPatientIDsSequence"))
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
            "institution_name": _text(ds, "InstitutionName", 128),
            "station_name": _text(ds, "StationName", 64),
            "specific_character_set": _text(ds, "SpecificCharacterSet", 128),
            "patient_name_received": name,
            "patient_name_conflict": name_conflict,
            "first_received_at": now,
            "last_received_at": now,
        },
    )
    if not study_created:
        # Another association created it a moment ago: the same rules apply to it.
        identity = Study.objects.filter(pk=study.pk).values_list(*_STUDY_FIELDS).first()
        assert identity is not None
        _check_study_identity(tags, facility.pk, patient_id, issuer, name, list(identity), {})
    return study.pk, study_created


def _record_identifiers(patient: Patient, sequence: Any) -> None:
    """The patient's other identifiers with their issuers (Other Patient IDs Sequence), kept
    once each. One without an issuer names nobody outside its facility and is not kept."""
    found = set()
    for item in sequence or []:
        value = str(item.get("PatientID") or "").strip()[:64]
        issuer = str(item.get("IssuerOfPatientID") or "").strip()[:64]
        if value and issuer:
            found.add((issuer, value))
    if found:
        PatientIdentifier.objects.bulk_create(
            [PatientIdentifier(patient=patient, issuer=issuer, value=value) for issuer, value in sorted(found)],
            ignore_conflicts=True,
        )


def same_patient_studies(study: Study) -> QuerySet[Study]:
    """The other studies of the study's patient: those of the same facility's patient (its
    Patient ID), and in any facility those of a patient who shares an identifier given by an
    issuer every facility shares (settings.SHARED_PATIENT_ID_ISSUERS: a national ID as Patient
    ID with that issuer, or in Other Patient IDs Sequence). Never by a Patient ID alone: two
    townships' P0001 are two people. Not scoped to a user: callers intersect it with theirs."""
    patient = study.patient
    same = Q(patient=patient.pk)
    shared = set(settings.SHARED_PATIENT_ID_ISSUERS)
    if shared:
        identities = {
            (issuer, value)
            for issuer, value in PatientIdentifier.objects.filter(patient=patient.pk, issuer__in=shared).values_list(
                "issuer", "value"
            )
        }
        if patient.patient_id and patient.issuer in shared:
            identities.add((patient.issuer, patient.patient_id))
        for issuer, value in identities:
            same |= Q(patient__issuer=issuer, patient__patient_id=value)
            same |= Q(patient__identifiers__issuer=issuer, patient__identifiers__value=value)
    return Study.objects.filter(same).exclude(pk=study.pk).distinct()


def _name_groups(name: str) -> list[str]:
    groups = [*name.split("="), "", ""][:2]
    return ["".join(group.upper().split()).rstrip("^") for group in groups]


def same_person_name(first: str, second: str) -> bool:
    """Whether two PN values name the same person as far as can be told: their alphabetic
    and ideographic groups agree wherever both have one (case and spaces aside), and
    with no group to compare, the whole values agree. An empty name agrees with any."""
    if not first or not second:
        return True
    compared = False
    for a, b in zip(_name_groups(first), _name_groups(second), strict=True):
        if a and b:
            if a != b:
                return False
            compared = True
    return compared or _name_groups(first) == _name_groups(second)


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
                with storage.open_key(key) as stream:
                    document = metadata_document(stream, image_rows)
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
            with storage.open_key(key) as stream:
                document = metadata_document(stream, image_rows)
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
        # Prior versions and pending corrections keep their files too.
        found.update(InstanceVersion.objects.filter(storage_key__in=batch).values_list("storage_key", flat=True))
    return found


def _indexed_rows(
    model: type[Instance] | type[InstanceVersion], after: str, batch: int
) -> Iterator[tuple[str, str, int]]:
    while True:
        rows = list(
            model.objects.filter(storage_key__gt=after)
            .order_by("storage_key")
            .values_list("storage_key", "sha256", "size")[:batch]
        )
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1][0]


def indexed_files(after: str = "", batch: int = 1000) -> Iterator[tuple[str, str, int]]:
    """(storage key, dataset SHA-256, file size) of every stored file the index points
    at (instances, their prior versions and pending corrections), in key order, from the
    first key after `after`: what storage_copy and storage_verify walk, resumably."""
    last = None
    for row in heapq.merge(_indexed_rows(Instance, after, batch), _indexed_rows(InstanceVersion, after, batch)):
        if row[0] != last:
            last = row[0]
            yield row


def indexed_file_count() -> int:
    return Instance.objects.count() + InstanceVersion.objects.count()


# UnsyncedFile rows whose files' fsyncs have returned, to go with the next instance's
# statement (_insert_autocommit) or at the end of the association (clear_synced_files).
_synced_lock = threading.Lock()
_synced: list[int] = []


def _file_synced(*instance_pks: int) -> None:
    with _synced_lock:
        _synced.extend(instance_pks)


def _take_synced_files() -> list[int]:
    with _synced_lock:
        taken = _synced[:]
        _synced.clear()
    return taken


def _forget_synced_files() -> None:
    # A forked child has its parent's list but none of its statements to come.
    global _synced_lock
    _synced.clear()
    _synced_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_synced_files)


def clear_synced_files() -> int:
    """Remove the UnsyncedFile rows of files synced since the last instance's statement
    took them; the receiver calls it when an association ends. Their loss in a crash is
    harmless (resolve_unsynced_files finds their files whole), so on PostgreSQL the
    commit does not wait for the WAL. Never raises; returns how many it removed."""
    taken = _take_synced_files()
    if not taken:
        return 0
    try:
        outermost = not connection.in_atomic_block
        with transaction.atomic():
            if outermost and connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            UnsyncedFile.objects.filter(instance_id__in=taken).delete()
    except Exception:
        # Left for the next start, which finds their files whole.
        logger.warning("could not clear %d synced files' rows", len(taken), exc_info=True)
        return 0
    return len(taken)


def _unindex_unsynced(pk: int, key: str) -> bool:
    """Take back an instance whose row was committed before its file's fsync returned, and
    whose file will never be durable (the fsync failed, or a crash lost it): its rows and,
    when the sweep has counted it already (cloudpacs.counts.fold), the counters. Never
    acknowledged: the sender was not told Success. Whether the row was still there,
    pointing at `key`."""
    with transaction.atomic():
        found = Instance.objects.filter(pk=pk, storage_key=key).values_list("series_id", "series__study_id").first()
        removed = False
        if found is not None:
            series_pk, study_pk = found
            # Locked in the order of every other writer (the fold's too): the series, its
            # study, then the instance; the series' mark read under its lock.
            counted_through = (
                Series.objects.select_for_update(no_key=True)
                .filter(pk=series_pk)
                .values_list("counted_through", flat=True)
                .first()
            )
            list(Study.objects.select_for_update(no_key=True).filter(pk=study_pk).values_list("pk"))
            _, deleted = Instance.objects.filter(pk=pk, storage_key=key).delete()
            removed = deleted.get(Instance._meta.label, 0) > 0
            if removed and counted_through is not None and pk <= counted_through:
                Series.objects.filter(pk=series_pk).update(number_of_instances=F("number_of_instances") - 1)
                Study.objects.filter(pk=study_pk).update(number_of_instances=F("number_of_instances") - 1)
        UnsyncedFile.objects.filter(instance_id=pk).delete()
    return removed


def resolve_unsynced_files(batch: int = 500) -> tuple[int, int]:
    """Settle the index rows committed before their file's fsync returned whose
    UnsyncedFile row is still there: after a crash or a power cut, the instances whose
    answer may not have been sent. A file whole at its key (the size and the dataset's
    SHA-256 its row says) is synced now and kept; a missing, empty or short one (what
    ext4 can leave of a file whose fsync never returned) was never acknowledged, and its
    row goes (_unindex_unsynced) with whatever is left of the file: the sender re-sends
    it. Safe beside processes storing now: their rows are written only once their files
    are whole at their keys. Returns (kept, taken back). The receiver runs it at its start."""
    kept = taken_back = 0
    after = 0
    while True:
        pks = list(
            UnsyncedFile.objects.filter(instance_id__gt=after)
            .order_by("instance_id")
            .values_list("instance_id", flat=True)[:batch]
        )
        if not pks:
            break
        after = pks[-1]
        rows = {
            pk: (uid, key, size, sha256)
            for pk, uid, key, size, sha256 in Instance.objects.filter(pk__in=pks).values_list(
                "pk", "sop_instance_uid", "storage_key", "size", "sha256"
            )
        }
        for pk in pks:
            if pk not in rows:
                UnsyncedFile.objects.filter(instance_id=pk).delete()
                continue
            uid, key, size, sha256 = rows[pk]
            try:
                try:
                    whole = storage.dataset_sha256(key) == (sha256, size)
                except FileNotFoundError:
                    whole = False
                if whole:
                    storage.sync_key(key)
                    UnsyncedFile.objects.filter(instance_id=pk).delete()
                    kept += 1
                    continue
            except (OSError, storage.StoreUnavailable):
                logger.exception("could not check the file of %s (%s): left for the next start", uid, key)
                continue
            if _unindex_unsynced(pk, key):
                storage.remove_unindexed(key, indexed_keys)
                taken_back += 1
                logger.warning(
                    "instance %s taken back: its row was committed but its file (%s) never became durable"
                    " (a crash before its answer); the sender was not told Success",
                    uid,
                    key,
                )
    return kept, taken_back


def sweep_orphan_files() -> int:
    """Remove what an interrupted store left behind; run once when the receiver starts."""
    return storage.sweep_orphans(indexed_keys)


def has_stable_studies(now: datetime, stable_seconds: float) -> bool:
    """Whether claim_stable_studies would find anything, or instances to count
    (cloudpacs.counts.fold): a plain read, so that a sweep with nothing to do never takes
    SQLite's write lock."""
    cutoff = now - timedelta(seconds=stable_seconds)
    if Study.objects.filter(status=Study.Status.RECEIVING, last_received_at__lte=cutoff).exists():
        return True
    if counts.has_unfolded():
        return True
    return PerformedProcedureStep.objects.filter(awaiting_images=True).exists() and bool(performed_studies_ready(now))


def claim_stable_studies(now: datetime, stable_seconds: float, limit: int = 200) -> list[Study]:
    """Studies that have received nothing for `stable_seconds` (at most `limit` of them,
    oldest first), and those whose images a completed performed procedure step (MPPS)
    listed are all stored, moved from receiving to arrived. Each study is claimed by
    exactly one caller: the move is a conditional UPDATE, so of two concurrent sweeps only
    one sees it change a row.

    The instances received since the last fold are counted first (cloudpacs.counts.fold:
    the studies' counters and last arrivals), and a study is claimed only with every
    instance counted: an instance committed after its claim is a late one, which the
    next fold counts and which makes the study updated."""
    counts.fold()
    cutoff = now - timedelta(seconds=stable_seconds)
    folded = counts.all_folded()
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
        if Study.objects.filter(folded, pk=pk, status=Study.Status.RECEIVING, last_received_at__lte=cutoff).update(
            status=Study.Status.ARRIVED, arrived_at=now
        )
    ]
    claimed += [
        pk
        for pk in dict.fromkeys(performed)
        if pk not in claimed
        and Study.objects.filter(folded, pk=pk, status=Study.Status.RECEIVING).update(
            status=Study.Status.ARRIVED, arrived_at=now
        )
    ]
    if performed:
        settle_performed_steps(claimed)
    return list(Study.objects.filter(pk__in=claimed).select_related("facility", "modality", "patient"))


# The reader's key images and measurements, kept in the study as a KOS and a GSPS
# (cloudpacs.keyobjects) through the same ingest path as a console's images.


class MarksRefused(ValueError):
    """Key images or measurements that cannot be kept; the message says why."""


@dataclass(frozen=True)
class SavedMarks:
    kos_uid: str
    gsps_uid: str
    instance_number: int


OWN_OBJECT_CLASSES = (keyobjects.KOS_CLASS, keyobjects.GSPS_CLASS)


def _own_objects(study: Study) -> QuerySet[Instance]:
    return Instance.objects.filter(
        series__study=study,
        series__manufacturer=keyobjects.MANUFACTURER,
        sop_class_uid__in=OWN_OBJECT_CLASSES,
    )


def _header(instance: Instance) -> Dataset:
    with storage.open_key(instance.storage_key) as stream:
        return dcmread(stream, stop_before_pixels=True)


def save_reading_marks(
    study: Study, user: User, key_images: list[dict[str, Any]], measurements: list[dict[str, Any]]
) -> SavedMarks:
    """Keep the reader's key images (a KOS) and measurements (a GSPS, which the KOS's key
    images refer to) in the study: new instances of two series of the study's own
    (Modality KO and PR, Manufacturer Yunying), stored and indexed like any received image,
    so that DICOMweb and C-FIND/C-MOVE serve them. Each save is a new pair with the next
    instance number; the newest pair is the study's current set (reading_marks). Images are
    named by SOP Instance UID and frame, and must be images of this study. Raises
    MarksRefused, with a message for the reader."""
    if not key_images and not measurements:
        raise MarksRefused(_("没有要保存的关键图像或测量。"))
    wanted = {item["sop_instance_uid"] for item in [*key_images, *measurements]}
    instances = {
        instance.sop_instance_uid: instance
        for instance in Instance.objects.filter(series__study=study, sop_instance_uid__in=wanted)
        .exclude(sop_class_uid__in=OWN_OBJECT_CLASSES)
        .select_related("series")
    }
    unknown = sorted(wanted - set(instances))
    if unknown:
        raise MarksRefused(_("图像 %(uid)s 不属于该检查。") % {"uid": unknown[0]})
    headers = {uid: _header(instance) for uid, instance in instances.items()}

    def image(item: dict[str, Any]) -> keyobjects.ImageRef:
        instance = instances[item["sop_instance_uid"]]
        frames = instance.number_of_frames or 1
        frame = int(item.get("frame") or 1)
        if frame > frames:
            raise MarksRefused(
                _("图像 %(uid)s 只有 %(frames)d 帧。") % {"uid": instance.sop_instance_uid, "frames": frames}
            )
        header = headers[instance.sop_instance_uid]
        spacing = header.get("PixelSpacing")
        return keyobjects.ImageRef(
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=instance.sop_instance_uid,
            series_uid=instance.series.series_uid,
            frame=frame,
            multi_frame=frames > 1,
            rows=int(header.get("Rows") or instance.rows or 0),
            columns=int(header.get("Columns") or instance.columns or 0),
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None,
        )

    marked = [
        keyobjects.Measurement(
            tool=item["tool"],
            image=image(item),
            points=tuple((float(x), float(y)) for x, y in item["points"]),
            text=item.get("text", ""),
        )
        for item in measurements
    ]
    keys = list(dict.fromkeys(image(item) for item in key_images))
    modality = study.modality
    if modality is None or modality.facility_id != study.facility_id:
        modality = Modality.objects.filter(facility_id=study.facility_id, is_active=True).first()
    if modality is None:
        raise MarksRefused(_("该机构没有可用的设备，无法保存。"))
    own = _own_objects(study)
    series_uids = dict(own.values_list("series__modality", "series__series_uid").distinct())
    number = (own.aggregate(Max("instance_number"))["instance_number__max"] or 0) + 1
    author = keyobjects.Author(keyobjects.person_name(str(user)), timezone.localtime())
    source = headers[(key_images or measurements)[0]["sop_instance_uid"]]
    gsps = None
    if marked:
        first = headers[marked[0].image.sop_instance_uid]
        rescale = first if "RescaleSlope" in first and "RescaleIntercept" in first else None
        if rescale is not None and "RescaleType" not in rescale:
            rescale = Dataset()
            rescale.RescaleSlope = first.RescaleSlope
            rescale.RescaleIntercept = first.RescaleIntercept
            rescale.RescaleType = "HU" if first.get("Modality") == "CT" else "US"
        gsps = keyobjects.build_gsps(
            source,
            marked,
            series_uid=series_uids.get("PR") or generate_uid(),
            instance_number=number,
            author=author,
            modality_lut=rescale,
            inverse=first.get("PhotometricInterpretation") == "MONOCHROME1",
        )
    kos = None
    if keys:
        kos = keyobjects.build_kos(
            source, keys, series_uid=series_uids.get("KO") or generate_uid(), instance_number=number,
            author=author, gsps=gsps,
        )  # fmt: skip
    for ds in filter(None, [gsps, kos]):
        ingest_instance(
            io.BytesIO(keyobjects.encode(ds)),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            modality=modality,
            channel=IngestConflict.Channel.STOW,
            user=user,
        )
    store_study_metadata([study.pk])
    saved = SavedMarks(kos.SOPInstanceUID if kos else "", gsps.SOPInstanceUID if gsps else "", number)
    audit(
        "cloudpacs.study.marks_saved",
        actor=user,
        obj=study,
        facility=study.facility,
        key_images=len(keys),
        measurements=len(marked),
        kos=saved.kos_uid,
        gsps=saved.gsps_uid,
    )
    return saved


def reading_marks(study: Study) -> dict[str, Any]:
    """The study's current key images and measurements (the newest pair save_reading_marks
    kept), each image named by series, SOP Instance UID and frame, measurements with their
    points in image pixel coordinates, for the viewer to show again."""
    own = list(_own_objects(study).order_by("-instance_number", "-pk"))
    empty: dict[str, Any] = {"key_images": [], "measurements": [], "saved": None}
    if not own:
        return empty
    number = own[0].instance_number
    current = [instance for instance in own if instance.instance_number == number]
    key_images: list[keyobjects.KeyImage] = []
    drawn: list[keyobjects.Drawn] = []
    for instance in current:
        ds = _header(instance)
        if instance.sop_class_uid == keyobjects.KOS_CLASS:
            key_images = keyobjects.read_kos(ds)
        else:
            drawn = keyobjects.read_gsps(ds)
    uids = {k.sop_instance_uid for k in key_images} | {d.sop_instance_uid for d in drawn}
    series_of = dict(
        Instance.objects.filter(series__study=study, sop_instance_uid__in=uids).values_list(
            "sop_instance_uid", "series__series_uid"
        )
    )
    return {
        "key_images": [
            {"series_uid": series_of[k.sop_instance_uid], "sop_instance_uid": k.sop_instance_uid, "frame": k.frame}
            for k in key_images
            if k.sop_instance_uid in series_of
        ],
        "measurements": [
            {
                "tool": d.tool,
                "series_uid": series_of[d.sop_instance_uid],
                "sop_instance_uid": d.sop_instance_uid,
                "frame": d.frame,
                "points": d.points,
                "text": d.text,
            }
            for d in drawn
            if d.sop_instance_uid in series_of
        ],
        "saved": {"instance_number": number, "at": current[0].received_at.isoformat()},
    }


# Key object selections and presentation states are shown on the images they refer to,
# never hung as series of their own.
NOT_HUNG = ("KO", "PR")


def image_series(study: Study) -> list[Series]:
    """The study's series for thumbnails and the viewer's hanging: all but its key object
    selections and presentation states; their number of instances exact (cloudpacs.counts)."""
    return counts.exact_series(counts.with_counted(study.series.exclude(modality__in=NOT_HUNG)))


def first_image(series: Series | None) -> dict[str, Any] | None:
    """The image the viewer shows first in `series` (the lowest Instance Number, a missing
    one counting as 0), so that the page can ask for it before the series' metadata is in;
    None when two images share that number (the viewer then picks from the metadata).
    With its Rows and Columns (None when the index has none), for the stand-in's size, and
    its storage key, for the page that renders its stand-in itself (stand_in_picture)."""
    if series is None:
        return None
    first = list(
        Instance.objects.filter(series=series)
        .annotate(number=Coalesce("instance_number", 0))
        .order_by("number", "sop_instance_uid")
        .values_list("number", "sop_instance_uid", "rows", "columns", "storage_key")[:2]
    )
    if not first or (len(first) == 2 and first[0][0] == first[1][0]):
        return None
    _number, sop_instance_uid, rows, columns, storage_key = first[0]
    return {
        "series_uid": series.series_uid,
        "sop_instance_uid": sop_instance_uid,
        "rows": rows,
        "columns": columns,
        "storage_key": storage_key,
    }


def stand_in_picture(first: dict[str, Any], size: tuple[int, int]) -> bytes | None:
    """The first image (first_image) as the viewer's page shows it until Cornerstone draws:
    a JPEG of quality 90 at `size`, in the file's own window, the very bytes that its
    /rendered URL (cloudpacs.views.viewer.stand_in_url) answers. None when it cannot be had
    now (a stored file that cannot be read, an image nothing here decodes), logged: the page
    then names that URL instead, and opens either way."""
    from cloudpacs.dicomweb.rendering import RenderOptions, render

    try:
        with storage.open_key(first["storage_key"]) as stream:
            return render(stream, 0, RenderOptions(viewport=size))
    except Exception:  # the stand-in is a courtesy: no failure of it may keep the page shut
        logger.warning("stand-in of %s not rendered in the page", first["sop_instance_uid"], exc_info=True)
        return None


def key_image_pictures(study: Study, size: int = 480) -> list[bytes]:
    """The study's current key images rendered as JPEG (the file's own window), at most
    `size` pixels a side, for the report's PDF; one that cannot be rendered is left out."""
    from cloudpacs.dicomweb.rendering import render_instance

    pictures = []
    for instance, frame in key_image_instances(study):
        try:
            pictures.append(render_instance(instance, viewport=(size, size), frame=frame))
        except Exception:
            logger.warning("key image %s frame %d not rendered", instance.sop_instance_uid, frame, exc_info=True)
    return pictures


def key_image_instances(study: Study) -> list[tuple[Instance, int]]:
    """The study's current key images as (instance, frame), in the KOS's order: the
    report's PDF shows the same selection the viewer marked."""
    marks = reading_marks(study)["key_images"]
    instances = Instance.objects.in_bulk([k["sop_instance_uid"] for k in marks], field_name="sop_instance_uid")
    return [(instances[k["sop_instance_uid"]], k["frame"]) for k in marks if k["sop_instance_uid"] in instances]


def open_association(
    host: str, port: int, ae_title: str, contexts: list[tuple[str, str]], *, timeout: float
) -> Association:
    """An association from the archive (`DICOM_AE_TITLE`) to another node, proposing each
    (SOP class, transfer syntax) of `contexts`, every network timeout `timeout` seconds.
    Its socket is checked for bytes to read with poll() from the moment it connects
    (cloudpacs.dicomsocket): pynetdicom's select() took a connection on a descriptor
    numbered 1024 or more for closed, so a worker holding that many failed every send."""
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for sop_class, transfer_syntax in contexts:
        ae.add_requested_context(sop_class, transfer_syntax)
    return ae.associate(host, port, ae_title=ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, dicomsocket.on_open)])
