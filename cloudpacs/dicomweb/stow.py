"""STOW-RS (PS3.18 10.5): each part of a multipart/related upload goes through the same
ingest service, and the same checks, as an image received over DICOM C-STORE.

Only technologists store, and only into their own facility; the instance is attributed
to the facility's modality of the matching kind (CT, or DR for CR/DX/DR and the other
projection radiography codes), else to the facility's first active modality. A facility
with no active modality cannot receive images, over DICOM or over the web."""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from pydicom import dcmread

from cloudpacs import conformance
from cloudpacs.conformance import ACCEPTED_SOP_CLASSES, ACCEPTED_TRANSFER_SYNTAXES
from cloudpacs.dicomweb import json as dj
from cloudpacs.dicomweb.http import DicomwebError
from cloudpacs.dicomweb.multipart import MultipartError, parse_media_type, read_parts
from cloudpacs.models import IngestConflict, Study
from cloudpacs.services import (
    IdentityConflict,
    IngestError,
    IngestOutcome,
    OutOfResources,
    clear_synced_files,
    ingest_instance,
)
from facilities.models import ExamKind, Modality, User

logger = logging.getLogger("cloudpacs.dicomweb")

# Failure reasons (PS3.18 10.5.3, the C-STORE statuses of PS3.4 B.2.3 and PS3.7 C): a
# refusal the receiver makes too has its status (cloudpacs.conformance).
PROCESSING_FAILURE = conformance.PROCESSING_FAILURE
NOT_AUTHORIZED = 0x0124
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
OUT_OF_RESOURCES = conformance.OUT_OF_RESOURCES
DOES_NOT_MATCH = conformance.DOES_NOT_MATCH_SOP_CLASS
CANNOT_UNDERSTAND = conformance.CANNOT_UNDERSTAND

PENDING_COMMENT = "Corrected SOPInstanceUID kept pending: the report is signed"

DR_CODES = {"CR", "DX", "DR", "RG", "PX", "MG", "IO"}
# RFC 2046 5.1.1 allows 70 of a few ASCII characters; clients stray from that in length
# and characters, so any printable ASCII is taken, up to 200.
BOUNDARY = re.compile(r"[\x20-\x7e]{0,199}[\x21-\x7e]")
READ_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality"]
# The longest reason given: a UID or two with what is wrong.
COMMENT_LIMIT = 200


@dataclass
class StoreReport:
    referenced: list[dj.JsonDataset] = field(default_factory=list)
    failed: list[dj.JsonDataset] = field(default_factory=list)
    studies: dict[str, Study] = field(default_factory=dict)
    # Why each failure failed, in the words of a C-STORE's Error Comment for the same
    # refusal, and the note on a correction kept pending: sent as Warning header fields
    # (FailureReason alone is a number, and the Failed SOP Sequence's items hold no text).
    comments: list[str] = field(default_factory=list)

    def fail(self, sop_class: str, sop_instance: str, reason: int, comment: str) -> None:
        self.failed.append(_failure(sop_class, sop_instance, reason))
        self.comment(comment)

    def comment(self, text: str) -> None:
        # A quoted-string of printable ASCII (RFC 9110 5.6.4), without quotes or backslashes.
        text = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in text)[:COMMENT_LIMIT]
        if text and text not in self.comments:
            self.comments.append(text)

    @property
    def status(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.referenced else 409

    def as_json(self, study_url: Callable[[str], str]) -> dj.JsonDataset:
        result: dj.JsonDataset = {}
        if len(self.studies) == 1:
            result["00081190"] = dj.element("UR", study_url(next(iter(self.studies))))
        result["00081198"] = {"vr": "SQ", "Value": self.failed} if self.failed else {"vr": "SQ"}
        result["00081199"] = {"vr": "SQ", "Value": self.referenced} if self.referenced else {"vr": "SQ"}
        return result


def check_content_type(value: str) -> str:
    """The boundary of an acceptable upload; 415 for anything but application/dicom parts."""
    media_type, params = parse_media_type(value)
    if media_type != "multipart/related":
        raise DicomwebError(415, 'send multipart/related; type="application/dicom"')
    part_type = params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise DicomwebError(415, f"parts of type {part_type} are not accepted; send application/dicom")
    boundary = params.get("boundary")
    if not boundary:
        raise DicomwebError(400, "the Content-Type has no boundary")
    if not BOUNDARY.fullmatch(boundary):
        # A non-ASCII boundary could not be looked for in the body: a server error.
        raise DicomwebError(400, "the boundary is not printable ASCII (RFC 2046 5.1.1)")
    return boundary


def modality_for(user: User, code: str) -> Modality | None:
    modalities = list(Modality.objects.filter(facility=user.facility, is_active=True).select_related("facility"))
    kind = ExamKind.CT if code == "CT" else ExamKind.DR if code in DR_CODES else None
    for modality in modalities:
        if modality.kind == kind:
            return modality
    return modalities[0] if modalities else None


def store(
    source: Any, boundary: str, user: User, target_study: str | None, instance_url: Callable[[str, str, str], str]
) -> StoreReport:
    report = StoreReport()
    try:
        for part in read_parts(source, boundary):
            try:
                part_type = parse_media_type(part.content_type or "application/dicom")[0]
                if part_type != "application/dicom":
                    report.fail("", "", CANNOT_UNDERSTAND, f"a part of type {part_type}, not application/dicom")
                    continue
                _store_one(part.file, user, target_study, instance_url, report)
            finally:
                part.file.close()
    except MultipartError as exc:
        if not report.referenced and not report.failed:
            raise DicomwebError(400, f"malformed multipart body: {exc}") from exc
        report.fail("", "", CANNOT_UNDERSTAND, f"the body ends in a malformed part: {exc}")
    finally:
        # The rows recording files whose fsync had not returned at their commit, now synced.
        clear_synced_files()
    if not report.referenced and not report.failed:
        raise DicomwebError(400, "the body holds no instance")
    return report


LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _dataset_offset(file: IO[bytes]) -> int | None:
    """Where the dataset starts after the File Meta Information, with or without the
    128-byte preamble and DICM prefix and the group length (pydicom, for one, writes a
    bare meta group when asked for no file format), or None when there is no meta group."""
    file.seek(0)
    head = file.read(64 * 1024)
    position = 132 if head[128:132] == b"DICM" else 0
    found = False
    # The meta group is always explicit VR little endian (PS3.10 7.1).
    while position + 8 <= len(head):
        group, _element = struct.unpack("<HH", head[position : position + 4])
        if group != 0x0002:
            break
        vr = head[position + 4 : position + 6]
        if vr in LONG_LENGTH_VRS:
            (length,) = struct.unpack("<I", head[position + 8 : position + 12])
            position += 12 + length
        else:
            (length,) = struct.unpack("<H", head[position + 6 : position + 8])
            position += 8 + length
        found = True
    return position if found and position <= len(head) else None


def _failure(sop_class: str, sop_instance: str, reason: int) -> dj.JsonDataset:
    return {
        "00081150": dj.element("UI", sop_class),
        "00081155": dj.element("UI", sop_instance),
        "00081197": dj.element("US", reason),
    }


def _store_one(
    file: IO[bytes],
    user: User,
    target_study: str | None,
    instance_url: Callable[[str, str, str], str],
    report: StoreReport,
) -> None:
    dataset_offset = _dataset_offset(file)
    if dataset_offset is None:
        logger.info("STOW part refused: not a DICOM file with a File Meta Information header")
        report.fail("", "", CANNOT_UNDERSTAND, "not a DICOM file with a File Meta Information header (PS3.10)")
        return
    try:
        file.seek(0)
        ds = dcmread(file, stop_before_pixels=True, specific_tags=READ_TAGS, force=True)
        meta = ds.file_meta
        transfer_syntax = str(meta.TransferSyntaxUID)
        sop_class = str(meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID") or "")
        sop_instance = str(meta.get("MediaStorageSOPInstanceUID") or ds.get("SOPInstanceUID") or "")
        study_uid = str(ds.get("StudyInstanceUID") or "")
        code = str(ds.get("Modality") or "").strip().upper()
    except Exception as exc:
        logger.info("STOW part refused: not a DICOM Part 10 file (%s)", exc)
        report.fail("", "", CANNOT_UNDERSTAND, f"not a DICOM Part 10 file: {type(exc).__name__}: {exc}")
        return
    if not sop_class or not sop_instance:
        # Neither in the meta nor in the dataset (0xC001 over DICOM too).
        missing = " and ".join(
            name for name, value in (("SOPClassUID", sop_class), ("SOPInstanceUID", sop_instance)) if not value
        )
        report.fail(sop_class, sop_instance, conformance.BAD_IDENTIFIER, f"{missing} missing")
        return
    if sop_class not in ACCEPTED_SOP_CLASSES:
        # The classes the receiver refuses at negotiation (PS3.18 Table I.2-2).
        logger.info("STOW instance %s refused: SOP class %s is not stored here", sop_instance, sop_class)
        report.fail(sop_class, sop_instance, SOP_CLASS_NOT_SUPPORTED, f"SOP Class {sop_class} is not stored here")
        return
    if transfer_syntax not in ACCEPTED_TRANSFER_SYNTAXES:
        logger.info("STOW instance %s refused: transfer syntax %s is not stored here", sop_instance, transfer_syntax)
        why = f"transfer syntax {transfer_syntax} is not stored here"
        report.fail(sop_class, sop_instance, TRANSFER_SYNTAX_NOT_SUPPORTED, why)
        return
    # No Study Instance UID found here is the ingest's to refuse, with the receiver's words
    # (it may say why: a dataset in the other byte order has none that can be read).
    if target_study is not None and study_uid and study_uid != target_study:
        # The instance is not of the study the request was addressed to.
        report.fail(sop_class, sop_instance, DOES_NOT_MATCH, "StudyInstanceUID is not the one the request names")
        return
    modality = modality_for(user, code)
    if modality is None:
        report.fail(sop_class, sop_instance, NOT_AUTHORIZED, "the facility has no active modality to store under")
        return
    # The bare dataset follows the meta group; ingest builds its own meta group for it.
    file.seek(dataset_offset)
    try:
        result = ingest_instance(
            file,  # type: ignore[arg-type]
            transfer_syntax_uid=transfer_syntax,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            modality=modality,
            channel=IngestConflict.Channel.STOW,
            user=user,
        )
    except IdentityConflict as conflict:
        # The same rules and words as over DICOM (recorded by the archive); the failure
        # names no study, so nothing of another township's is revealed.
        logger.info("STOW instance %s refused: %s", sop_instance, conflict)
        report.fail(sop_class, sop_instance, conflict.status, conflict.comment)
        return
    except OutOfResources as exc:
        # Its message may name the store's paths: the sender is told only to retry.
        logger.error("STOW instance %s not stored: %s", sop_instance, exc)
        report.fail(sop_class, sop_instance, exc.status, "out of resources: the image store is full or unavailable")
        return
    except IngestError as exc:
        # The status and words a C-STORE of the same dataset is answered with.
        logger.info("STOW instance %s refused: %s", sop_instance, exc)
        report.fail(sop_class, sop_instance, exc.status, str(exc))
        return
    except Exception:
        logger.exception("STOW instance %s failed", sop_instance)
        report.fail(sop_class, sop_instance, PROCESSING_FAILURE, "processing failure")
        return
    instance = result.instance
    series = instance.series
    study = series.study
    if study.facility_id != user.facility_id:
        # Cannot happen past the identity rules; if it did, the answer must not name it.
        logger.error("STOW instance %s resolved to another facility's study", sop_instance)
        report.fail(sop_class, sop_instance, PROCESSING_FAILURE, "processing failure")
        return
    if result.outcome == IngestOutcome.PENDING_CORRECTION:
        report.comment(PENDING_COMMENT)
    report.studies[study.study_uid] = study
    report.referenced.append(
        {
            "00081150": dj.element("UI", instance.sop_class_uid),
            "00081155": dj.element("UI", instance.sop_instance_uid),
            "00081190": dj.element("UR", instance_url(study.study_uid, series.series_uid, instance.sop_instance_uid)),
        }
    )
