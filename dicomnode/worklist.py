"""The receiver's worklist services: Modality Worklist C-FIND (PS3.4 K) and Modality
Performed Procedure Step N-CREATE/N-SET (PS3.4 F.7).

As for C-STORE, the handlers only parse and hand off: the query's matching keys become a
`WorklistQuery` that `cloudpacs.orders.scheduled_steps` answers for the console's own
township; a step's report goes to `create_performed_step`/`update_performed_step`. The
DICOM side (character sets, which keys to return, statuses) stays here.

C-FIND statuses (see docs/dicom-conformance.md):
  0xFF00 pending, one per scheduled step; 0x0000 done; 0xFE00 cancelled by the SCU
  0xC000 unable to process: the identifier cannot be decoded, or a date or time is malformed
  0xA700 out of resources: the index is unavailable
MPPS statuses: 0x0000; 0x0120 missing attribute (no status at creation); 0x0111 duplicate
SOP instance; 0x0112 no such SOP instance (also
another township's step); 0x0106 invalid attribute value (a status other than IN PROGRESS
at creation, an unknown status); 0x0110 processing failure, also for a finished step,
which may no longer be updated (PS3.4 F.7.2.2.4).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import Any

from django.db import DatabaseError, connection
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import evt

from cloudpacs import orders
from cloudpacs.models import Order, OrderPriority
from cloudpacs.services import person_name_groups
from facilities.models import Modality

logger = logging.getLogger("dicomnode")

PENDING = 0xFF00
SUCCESS = 0x0000
CANCELLED = 0xFE00
UNABLE_TO_PROCESS = 0xC000
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110

# Answered in the character set the query asked for when it is one of these (PS3.4
# C.4.1.1.3.2 lets the SCP answer in another, which the SCU may not read); otherwise (none,
# or one not listed) in UTF-8, declared in every answer.
ISO_2022_IR_58 = "ISO 2022 IR 58"
ANSWER_CHARSETS = ("ISO_IR 192", "GB18030", "GBK", ISO_2022_IR_58)
DEFAULT_CHARSET = "ISO_IR 192"
# Character sets without code extensions that cannot hold every character (GBK lacks the
# CJK extension A characters GB18030 has, such as 䶮; Latin-1 and the other ISO 8859 parts
# lack Chinese): an answer goes in one of them only when all its text fits, else in UTF-8.
PARTIAL_CHARSETS = {
    "GBK": "gbk",
    "ISO_IR 100": "latin_1",
    "ISO_IR 101": "iso8859_2",
    "ISO_IR 109": "iso8859_3",
    "ISO_IR 110": "iso8859_4",
    "ISO_IR 144": "iso8859_5",
    "ISO_IR 127": "iso8859_6",
    "ISO_IR 126": "iso8859_7",
    "ISO_IR 138": "iso8859_8",
    "ISO_IR 148": "iso8859_9",
    "ISO_IR 203": "iso8859_15",
}
# GB 2312 with code extensions (PS3.3 C.12.1.1.2, PS3.5 6.1.2.5): pydicom writes the bytes
# but not the escape sequence that designates GB 2312 to G1, so those values are encoded
# here. The designation lasts to the next delimiter (^ = \ and, in text, line breaks).
ESC_GB2312_G1 = b"\x1b$)A"
_DELIMITERS = re.compile(r"([\^=\\\r\n\t\f])")
_TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}

PRIORITIES: dict[str, str] = {
    OrderPriority.EMERGENCY: "STAT",
    OrderPriority.URGENT: "HIGH",
    OrderPriority.ROUTINE: "ROUTINE",
}


def _modality(event: evt.Event) -> Modality | None:
    """The registered modality of the association (set by the association policy)."""
    state = getattr(event.assoc, "_yunying", None)
    if state is None or not getattr(state, "accepted", False):
        return None
    modality: Modality | None = state.modality
    return modality


# --- Modality Worklist C-FIND --------------------------------------------------------------


class BadQuery(ValueError):
    """A matching key whose value cannot be understood."""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(item) for item in value)
    return str(value).strip()


def _range(text: str, parse: Any) -> tuple[Any, Any]:
    """(low, high) of a DICOM single value or range 'A-B', '-B', 'A-'; None where open."""
    text = text.strip()
    if not text:
        return None, None
    if "-" in text:
        low, _, high = text.partition("-")
        return (parse(low) if low.strip() else None), (parse(high) if high.strip() else None)
    value = parse(text)
    return value, value


def _parse_date(text: str) -> date:
    try:
        return datetime.strptime(text.strip().replace(".", ""), "%Y%m%d").date()
    except ValueError:
        raise BadQuery(f"date {text!r} is not YYYYMMDD") from None


def _parse_time(text: str) -> time:
    digits = text.strip().replace(":", "").split(".")[0]
    try:
        if len(digits) < 2 or len(digits) % 2:
            raise ValueError
        parts = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)] + [0, 0]
        return time(parts[0], parts[1], min(parts[2], 59))
    except ValueError:
        raise BadQuery(f"time {text!r} is not HHMMSS") from None


def _when(day: date | None, moment: time | None, default: time) -> datetime | None:
    if day is None:
        return None
    return timezone.make_aware(datetime.combine(day, moment or default))


def _patient_name(identifier: Dataset, charset: str) -> str:
    if charset == ISO_2022_IR_58 and "PatientName" in identifier:
        # Decoded as the receiver decodes an image's name in this character set.
        element: Any = identifier.get_item("PatientName", keep_deferred=True)
        raw = element.value if isinstance(getattr(element, "value", None), bytes) else None
        return person_name_groups(identifier, "PatientName", raw)[0]
    return _text(identifier, "PatientName")


def answer_charset(identifier: Dataset) -> str:
    """The character set to answer a query in: the query's own when it is one of
    ANSWER_CHARSETS, else UTF-8."""
    requested = identifier.get("SpecificCharacterSet") or ""
    charsets = [requested] if isinstance(requested, str) else [str(value) for value in requested]
    charsets = [value.strip() for value in charsets if value and value.strip()]
    # "\ISO 2022 IR 58" and "ISO 2022 IR 6\ISO 2022 IR 58" both ask for GB 2312 with code extensions.
    charsets = [value for value in charsets if value != "ISO 2022 IR 6"]
    if len(charsets) == 1 and (charsets[0] in ANSWER_CHARSETS or charsets[0] in PARTIAL_CHARSETS):
        return charsets[0]
    return DEFAULT_CHARSET


def query_patient_name(identifier: Dataset, charset: str) -> str:
    """The query's Patient's Name as text, GB 2312 with code extensions included."""
    return _patient_name(identifier, charset)


def parse_query(identifier: Dataset) -> tuple[orders.WorklistQuery, str]:
    """The matching keys of a worklist query, and the character set to answer in."""
    charset = answer_charset(identifier)
    steps = identifier.get("ScheduledProcedureStepSequence")
    step = steps[0] if steps else Dataset()
    first_day, last_day = _range(_text(step, "ScheduledProcedureStepStartDate"), _parse_date)
    first_time, last_time = _range(_text(step, "ScheduledProcedureStepStartTime"), _parse_time)
    uids = [uid for uid in _text(identifier, "StudyInstanceUID").split("\\") if uid.strip()]
    query = orders.WorklistQuery(
        modality=_text(step, "Modality"),
        station_ae_title=_text(step, "ScheduledStationAETitle"),
        start=_when(first_day, first_time, time.min),
        end=_when(last_day, last_time, time.max),
        patient_name=_patient_name(identifier, charset),
        patient_id=_text(identifier, "PatientID"),
        accession_number=_text(identifier, "AccessionNumber"),
        requested_procedure_id=_text(identifier, "RequestedProcedureID"),
        study_instance_uids=[] if uids == ["*"] else uids,
    )
    return query, charset


def order_dataset(order: Order, modality_value: str = "") -> Dataset:
    """Everything the worklist knows about one scheduled step, as MWL attributes."""
    parts = list(order.body_parts.all())
    description = f"{order.kind} {orders.body_part_names(parts)}"[:64]
    local = timezone.localtime(order.scheduled_at)
    codes = orders.MODALITY_CODES.get(order.kind, (order.kind,))
    ds = Dataset()
    ds.AccessionNumber = order.accession_number
    ds.ReferringPhysicianName = ""
    name = order.patient_name
    ds.PatientName = f"{order.patient_name_pinyin}={name}" if order.patient_name_pinyin else name
    ds.PatientID = order.patient_id
    ds.IssuerOfPatientID = order.facility.code[:64]
    ds.PatientBirthDate = order.patient_birth_date.strftime("%Y%m%d") if order.patient_birth_date else ""
    ds.PatientSex = order.patient_sex
    ds.AdditionalPatientHistory = order.clinical_history[:10240]
    ds.StudyInstanceUID = order.study_instance_uid
    ds.RequestedProcedureDescription = description
    ds.RequestedProcedureID = order.accession_number
    ds.RequestedProcedurePriority = PRIORITIES.get(order.priority, "ROUTINE")
    ds.ReasonForTheRequestedProcedure = order.question[:64]
    step = Dataset()
    step.Modality = modality_value if modality_value in codes else codes[0]
    step.ScheduledStationAETitle = order.modality.ae_title
    step.ScheduledProcedureStepStartDate = local.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = local.strftime("%H%M%S")
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = description
    step.ScheduledProcedureStepID = order.accession_number
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def project(query: Dataset, full: Dataset) -> Dataset:
    """The return keys of `query`, with our values (PS3.4 C.2.2.1.2): a key we have no value
    for comes back empty; an empty sequence key asks for the whole item."""
    answer = Dataset()
    for element in query:
        if element.tag == 0x00080005:
            continue
        ours = full.get(element.tag)
        if element.VR == "SQ":
            wanted = element.value[0] if element.value else None
            items = ours.value if ours is not None else []
            answer.add_new(
                element.tag,
                "SQ",
                Sequence([project(wanted, item) if wanted is not None and len(wanted) else item for item in items]),
            )
        elif ours is not None:
            answer.add(ours)
        else:
            answer.add_new(element.tag, element.VR, None)
    return answer


def _iso2022_ir58(text: str) -> bytes:
    """A text value in GB 2312 with code extensions: each run between delimiters that is
    not plain ASCII is preceded by ESC $ ) A. Raises UnicodeEncodeError for a character
    GB 2312 lacks."""
    encoded = b""
    for piece in _DELIMITERS.split(text):
        data = piece.encode("gb2312")
        encoded += ESC_GB2312_G1 + data if not piece.isascii() else data
    return encoded


def _encode_iso2022_ir58(ds: Dataset) -> None:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _encode_iso2022_ir58(item)
        elif element.VR in _TEXT_VRS and element.value is not None and not isinstance(element.value, bytes):
            text = str(element.value)
            if not text.isascii():
                element.value = _iso2022_ir58(text)


def _fits(ds: Dataset, encoding: str) -> bool:
    """Whether every text value of `ds` (in its sequences too) can be written in `encoding`."""
    for element in ds:
        if element.VR == "SQ":
            if not all(_fits(item, encoding) for item in element.value):
                return False
        elif element.VR in _TEXT_VRS and element.value is not None and not isinstance(element.value, bytes):
            try:
                str(element.value).encode(encoding)
            except UnicodeEncodeError:
                return False
    return True


def encoded_answer(build: Any, charset: str) -> Dataset:
    """The answer `build()` makes, in `charset`, declaring it. GB 2312 with code extensions
    is written here; an answer with a character GB 2312 lacks, or one that does not fit a
    character set of PARTIAL_CHARSETS, goes in UTF-8 instead."""
    answer: Dataset = build()
    if charset in PARTIAL_CHARSETS and not _fits(answer, PARTIAL_CHARSETS[charset]):
        charset = DEFAULT_CHARSET
    if charset == ISO_2022_IR_58:
        try:
            _encode_iso2022_ir58(answer)
        except UnicodeEncodeError:
            # A character outside GB 2312 (a rare name): this answer goes in UTF-8, and says so.
            answer = build()
        else:
            answer.SpecificCharacterSet = ["", ISO_2022_IR_58]
            return answer
        charset = DEFAULT_CHARSET
    answer.SpecificCharacterSet = charset
    return answer


def answer_for(query: Dataset, order: Order, charset: str, modality_value: str) -> Dataset:
    return encoded_answer(lambda: project(query, order_dataset(order, modality_value)), charset)


def handle_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
    """Modality Worklist C-FIND: the console's own township's scheduled steps that match."""
    modality = _modality(event)
    if modality is None:
        yield PROCESSING_FAILURE, None
        return
    try:
        identifier = event.identifier
        query, charset = parse_query(identifier)
    except Exception as exc:
        logger.warning("worklist query from %s refused: %s", modality.ae_title, exc)
        yield UNABLE_TO_PROCESS, None
        return
    try:
        found = orders.scheduled_steps(modality.facility, query)
    except DatabaseError:
        logger.exception("worklist query from %s: index unavailable", modality.ae_title)
        connection.close()
        yield OUT_OF_RESOURCES, None
        return
    logger.info("worklist query from %s: %d scheduled steps (%s)", modality.ae_title, len(found), charset)
    for order in found:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        try:
            answer = answer_for(identifier, order, charset, query.modality.upper())
        except Exception:
            logger.exception("worklist answer for order %s failed", order.accession_number)
            yield UNABLE_TO_PROCESS, None
            return
        yield PENDING, answer
    yield SUCCESS, None


# --- Modality Performed Procedure Step ---------------------------------------------------


def _dicom_datetime(ds: Dataset, date_keyword: str, time_keyword: str) -> datetime | None:
    day = _text(ds, date_keyword)
    if not day:
        return None
    moment = _text(ds, time_keyword)
    try:
        return _when(_parse_date(day), _parse_time(moment) if moment else None, time.min)
    except BadQuery:
        raise orders.InvalidStep(f"{date_keyword} {day!r} / {time_keyword} {moment!r} malformed") from None


def parse_step(ds: Dataset) -> orders.PerformedStepReport:
    report = orders.PerformedStepReport()
    if "PerformedProcedureStepStatus" in ds:
        report.status = _text(ds, "PerformedProcedureStepStatus").upper()
    scheduled = ds.get("ScheduledStepAttributesSequence")
    if scheduled:
        report.accession_number = _text(scheduled[0], "AccessionNumber")
        report.study_instance_uid = _text(scheduled[0], "StudyInstanceUID")
    if "PerformedSeriesSequence" in ds:
        uids: list[str] = []
        for series in ds.PerformedSeriesSequence or []:
            for keyword in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
                for item in series.get(keyword) or []:
                    uid = _text(item, "ReferencedSOPInstanceUID")
                    if uid:
                        uids.append(uid)
        report.referenced_instances = list(dict.fromkeys(uids))
    report.started_at = _dicom_datetime(ds, "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime")
    report.ended_at = _dicom_datetime(ds, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")
    return report


def handle_n_create(event: evt.Event) -> tuple[int, Dataset | None]:
    """MPPS N-CREATE: a console started a step (IN PROGRESS)."""
    modality = _modality(event)
    if modality is None:
        return PROCESSING_FAILURE, None
    request: Any = event.request
    uid = str(request.AffectedSOPInstanceUID or "").strip()
    try:
        attributes = event.attribute_list
        report = parse_step(attributes)
        created = uid or generate_uid()
        orders.create_performed_step(modality, created, report)
    except orders.PerformedStepError as exc:
        logger.warning("MPPS N-CREATE %s from %s refused (0x%04X): %s", uid, modality.ae_title, exc.status, exc)
        return exc.status, None
    except DatabaseError:
        logger.exception("MPPS N-CREATE %s from %s: index unavailable", uid, modality.ae_title)
        connection.close()
        return PROCESSING_FAILURE, None
    except Exception:
        logger.exception("MPPS N-CREATE %s from %s could not be read", uid, modality.ae_title)
        return PROCESSING_FAILURE, None
    logger.info("MPPS %s IN PROGRESS from %s (accession %s)", created, modality.ae_title, report.accession_number)
    if not uid:
        attributes.AffectedSOPInstanceUID = created
    return SUCCESS, attributes


def handle_n_set(event: evt.Event) -> tuple[int, Dataset | None]:
    """MPPS N-SET: images performed, and COMPLETED or DISCONTINUED at the end. A completed
    step asks for a stability sweep at once: if its images are all stored, the study
    arrives now."""
    modality = _modality(event)
    if modality is None:
        return PROCESSING_FAILURE, None
    request: Any = event.request
    uid = str(request.RequestedSOPInstanceUID or "").strip()
    try:
        changes = event.modification_list
        report = parse_step(changes)
        step = orders.update_performed_step(modality, uid, report)
    except orders.PerformedStepError as exc:
        logger.warning("MPPS N-SET %s from %s refused (0x%04X): %s", uid, modality.ae_title, exc.status, exc)
        return exc.status, None
    except DatabaseError:
        logger.exception("MPPS N-SET %s from %s: index unavailable", uid, modality.ae_title)
        connection.close()
        return PROCESSING_FAILURE, None
    except Exception:
        logger.exception("MPPS N-SET %s from %s could not be read", uid, modality.ae_title)
        return PROCESSING_FAILURE, None
    logger.info("MPPS %s %s from %s, %d images", uid, step.status, modality.ae_title, len(step.referenced_instances))
    if step.awaiting_images:
        from dicomnode.stability import request_sweep

        request_sweep()
    return SUCCESS, changes


# Modality Worklist Information Model - FIND, and Modality Performed Procedure Step. The
# server binds the handlers (dicomnode.server.HANDLERS), behind the permission checks.
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
SOP_CLASSES = [WORKLIST_FIND, "1.2.840.10008.3.1.2.3.3"]
