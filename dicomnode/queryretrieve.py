"""The receiver's Query/Retrieve services (PS3.4 C): C-FIND, C-MOVE and C-GET on the
Patient Root and Study Root information models, for registered workstations, archives
and consoles.

As for the worklist, the handlers only parse and hand off: the identifier's keys become an
`ArchiveQuery` that `cloudpacs.queryretrieve` answers within the calling entity's scope
(a township's entity: its own studies; the county's: the studies sent for reading). The
DICOM side (levels, return keys, character sets, statuses, the sub-operations) stays here.

C-FIND statuses: 0xFF00 pending, one per match; 0x0000 done; 0xFE00 cancelled, or cut at
DICOM_FIND_MAX_RESULTS matches (as Orthanc's LimitFindResults: DIMSE has no "more
matches" status); 0xC000 unable to process (level or key malformed); 0xA700 out of
resources (index unavailable); 0x0124 not authorized (an entity without the query
permission).

SOP Class Extended Negotiation of the two FIND classes (PS3.4 C.5.1.1): combined
date-time matching and fuzzy semantic matching of person names are accepted when asked
for; relational queries, timezone adjustment and enhanced multi-frame conversion are not.
C-MOVE: 0xA801 move destination unknown (not a registered move destination); 0xC514
unable to process (an identifier that names nothing to retrieve); then pynetdicom's
sub-operation statuses (0xFF00 pending, 0x0000, 0xB000 warning, 0xA702 all failed).
C-GET: the same sub-operations on the association itself; 0xC000 / 0x0124 refusals.
Each instance goes in its stored syntax where the peer accepted it, else decompressed
for a peer that accepted only uncompressed syntaxes (cloudpacs.transcoding); one that
cannot be is a failed sub-operation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from pydicom.dataset import Dataset
from pydicom.fileutil import buffer_length
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context

from cloudpacs import queryretrieve as archive_qr
from cloudpacs import transcoding
from dicomnode import permits, reactor, worklist
from facilities.services import move_destination

logger = logging.getLogger("dicomnode")

PENDING = 0xFF00
SUCCESS = 0x0000
CANCELLED = 0xFE00
UNABLE_TO_PROCESS = 0xC000
OUT_OF_RESOURCES = 0xA700

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
FIND_SOP_CLASSES = [PATIENT_ROOT_FIND, STUDY_ROOT_FIND]
RETRIEVE_SOP_CLASSES = [PATIENT_ROOT_MOVE, PATIENT_ROOT_GET, STUDY_ROOT_MOVE, STUDY_ROOT_GET]
SOP_CLASSES = [*FIND_SOP_CLASSES, *RETRIEVE_SOP_CLASSES]
PATIENT_ROOT = {PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET}

NATIVE = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
# Stored in these, an instance is sent in a native syntax (big endian made little endian
# when it is read, cloudpacs.queryretrieve.as_little_endian).
NATIVE_STORED = {*NATIVE, "1.2.840.10008.1.2.2"}
# PS3.8 9.3.2.2: odd presentation context IDs 1 to 255.
MAX_CONTEXTS = 128


# Service-class application information of the FIND classes (PS3.4 C.5.1.1.1), byte by
# byte: relational queries, combined date-time matching, fuzzy semantic matching of person
# names, timezone query adjustment, enhanced multi-frame image conversion. 1: supported.
RELATIONAL, COMBINED_DATETIME, FUZZY_NAMES, TIMEZONE, ENHANCED_MULTIFRAME = range(5)
FIND_OPTIONS = (0, 1, 1, 0, 0)


def handle_sop_extended(event: evt.Event) -> dict[str, bytes]:
    """EVT_SOP_EXTENDED: answer each FIND class's extended negotiation with what the
    archive does of what was asked (one byte per option asked, at most the five known);
    other classes' items get no answer (the default: nothing extended)."""
    answers: dict[str, bytes] = {}
    requested: dict[str, bytes] = event.app_info  # type: ignore[attr-defined]
    for sop_class, info in (requested or {}).items():
        if str(sop_class) not in FIND_SOP_CLASSES or not info:
            continue
        asked = bytes(info)[: len(FIND_OPTIONS)]
        answers[str(sop_class)] = bytes(int(flag == 1 and FIND_OPTIONS[n] == 1) for n, flag in enumerate(asked))
    return answers


def negotiated(event: evt.Event, sop_class: str, option: int) -> bool:
    """Whether the association's extended negotiation agreed `option` for `sop_class`."""
    try:
        agreed = event.assoc.acceptor.sop_class_extended.get(UID(sop_class), b"")
    except Exception:
        return False
    return len(agreed) > option and agreed[option] == 1


def _entity(event: evt.Event) -> Any:
    return permits.entity(event)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(item) for item in value)
    return str(value).strip()


def parse_identifier(
    identifier: Dataset, sop_class: str, *, combined_datetime: bool = False
) -> tuple[archive_qr.ArchiveQuery, str]:
    """The level and matching keys of a C-FIND/C-MOVE/C-GET identifier ({tag: text}, tags
    as eight hex digits), and the character set to answer in."""
    charset = worklist.answer_charset(identifier)
    level = _text(identifier.get("QueryRetrieveLevel")).upper()
    keys: dict[str, str] = {}
    for element in identifier:
        if element.tag.group in (0x0008,) and element.tag.element in (0x0005, 0x0052):
            continue
        if element.VR == "SQ":
            continue
        if element.keyword == "PatientName":
            value = worklist.query_patient_name(identifier, charset)
        else:
            value = _text(element.value)
        keys[f"{element.tag:08X}"] = value
    query = archive_qr.ArchiveQuery(
        level, keys, patient_root=sop_class in PATIENT_ROOT, combined_datetime=combined_datetime
    )
    return query, charset


# --- Answers ------------------------------------------------------------------------------


def _da(value: date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _tm(value: time | None) -> str:
    return value.strftime("%H%M%S") if value else ""


def _pn(alphabetic: str, ideographic: str, phonetic: str) -> str:
    groups = [alphabetic or "", ideographic or "", phonetic or ""]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _number(value: Any) -> str:
    return "" if value is None else str(value)


Getter = Callable[[dict[str, Any]], Any]


def _field(name: str) -> Getter:
    return lambda row: row[name]


def _count(name: str) -> Getter:
    return lambda row: _number(row[name])


PN_GROUPS = ("alphabetic", "ideographic", "phonetic")
_PATIENT_ATTRIBUTES: list[tuple[int, str, Getter]] = [
    (0x00100010, "PN", lambda row: _pn(*(row[f"patient__name_{group}"] for group in PN_GROUPS))),
    (0x00100020, "LO", _field("patient__patient_id")),
    (0x00100021, "LO", _field("patient__issuer")),
    (0x00100030, "DA", lambda row: _da(row["patient__birth_date"])),
    (0x00100040, "CS", _field("patient__sex")),
]
_STUDY_ATTRIBUTES: list[tuple[int, str, Getter]] = [
    (0x00080020, "DA", lambda row: _da(row["study_date"])),
    (0x00080030, "TM", lambda row: _tm(row["study_time"])),
    (0x00080050, "SH", _field("accession_number")),
    (0x00200010, "SH", _field("study_id")),
    (0x0020000D, "UI", _field("study_uid")),
    (0x00081030, "LO", _field("description")),
    (0x00080090, "PN", _field("referring_physician")),
    (0x00080061, "CS", lambda row: [code for code in row["modalities_in_study"].split("\\") if code]),
    (0x00080080, "LO", _field("institution_name")),
    (0x00201206, "IS", _count("number_of_series")),
    (0x00201208, "IS", _count("number_of_instances")),
]
_SERIES_ATTRIBUTES: list[tuple[int, str, Getter]] = [
    (0x00080060, "CS", _field("series__modality")),
    (0x0020000E, "UI", _field("series__series_uid")),
    (0x00200011, "IS", _count("series__series_number")),
    (0x0008103E, "LO", _field("series__description")),
    (0x00180015, "CS", _field("series__body_part_examined")),
    (0x00081010, "SH", _field("series__station_name")),
    (0x00080070, "LO", _field("series__manufacturer")),
    (0x00201209, "IS", _count("series__number_of_instances")),
]
_IMAGE_ATTRIBUTES: list[tuple[int, str, Getter]] = [
    (0x00080018, "UI", _field("instance__sop_instance_uid")),
    (0x00080016, "UI", _field("instance__sop_class_uid")),
    (0x00200013, "IS", _count("instance__instance_number")),
    (0x00280010, "US", _field("instance__rows")),
    (0x00280011, "US", _field("instance__columns")),
    (0x00280008, "IS", _count("instance__number_of_frames")),
]
_EVERY_LEVEL: list[tuple[int, str, Getter]] = [
    (0x00080054, "AE", lambda row: settings.DICOM_AE_TITLE),
    (0x00080056, "CS", lambda row: "ONLINE"),
]
# What the archive answers at each level, its own attributes and those of the levels
# above, by tag; everything else asked for comes back empty.
ATTRIBUTES: dict[str, dict[int, tuple[str, Getter]]] = {
    level: {tag: (vr, getter) for tag, vr, getter in attributes}
    for level, attributes in {
        archive_qr.PATIENT: [
            *_PATIENT_ATTRIBUTES,
            (0x00201200, "IS", _count("related_studies")),
            *_EVERY_LEVEL,
        ],
        archive_qr.STUDY: [*_PATIENT_ATTRIBUTES, *_STUDY_ATTRIBUTES, *_EVERY_LEVEL],
        archive_qr.SERIES: [*_PATIENT_ATTRIBUTES, *_STUDY_ATTRIBUTES, *_SERIES_ATTRIBUTES, *_EVERY_LEVEL],
        archive_qr.IMAGE: [
            *_PATIENT_ATTRIBUTES,
            *_STUDY_ATTRIBUTES,
            *_SERIES_ATTRIBUTES,
            *_IMAGE_ATTRIBUTES,
            *_EVERY_LEVEL,
        ],
    }.items()
}
SPECIFIC_CHARACTER_SET = 0x00080005
QUERY_RETRIEVE_LEVEL = 0x00080052


def answer(query: Dataset, row: dict[str, Any], level: str, charset: str) -> Dataset:
    """The query's return keys with our values (PS3.4 C.2.2.1.2), its level, and where
    the match can be retrieved from. Only the keys asked for are built: an answer is built
    per match, and a wide query has hundreds."""
    attributes = ATTRIBUTES[level]

    def build() -> Dataset:
        projected = Dataset()
        for element in query:
            tag = element.tag
            if tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL):
                continue
            ours = attributes.get(tag)
            if ours is not None:
                vr, value = ours[0], ours[1](row)
                projected.add_new(tag, vr, value)
            elif element.VR == "SQ":
                projected.add_new(tag, "SQ", Sequence())
            else:
                projected.add_new(tag, element.VR, None)
        projected.add_new(QUERY_RETRIEVE_LEVEL, "CS", level)
        return projected

    return worklist.encoded_answer(build, charset)


# --- C-FIND -------------------------------------------------------------------------------


def handle_find(event: evt.Event) -> Iterator[tuple[Any, Dataset | None]]:
    """C-FIND, whichever information model: the worklist (dicomnode.worklist) or the
    archive's Patient Root and Study Root models."""
    sop_class = str(event.context.abstract_syntax)
    if permits.permitted(event, permits.QUERY) is None:
        service = "worklist queries" if sop_class == worklist.WORKLIST_FIND else "queries"
        yield permits.refusal(event, service), None
        return
    if sop_class == worklist.WORKLIST_FIND:
        yield from worklist.handle_find(event)
        return
    yield from _find(event, sop_class)


def _find(event: evt.Event, sop_class: str) -> Iterator[tuple[Any, Dataset | None]]:
    entity = _entity(event)
    try:
        identifier = event.identifier
        combined = negotiated(event, sop_class, COMBINED_DATETIME)
        query, charset = parse_identifier(identifier, sop_class, combined_datetime=combined)
    except Exception as exc:
        logger.warning("C-FIND from %s refused: %s", entity.ae_title, exc)
        yield _failure(UNABLE_TO_PROCESS, str(exc)), None
        return
    archive_qr.record_refusals(entity, query, via="C-FIND")
    count = 0
    cap = settings.DICOM_FIND_MAX_RESULTS
    try:
        for row in archive_qr.find(entity, query):
            if event.is_cancelled:
                logger.info("C-FIND from %s cancelled after %d matches", entity.ae_title, count)
                yield CANCELLED, None
                return
            if cap and count >= cap:
                # No DIMSE status says "more matches than sent": Orthanc's LimitFindResults
                # ends with Cancel, which a workstation that did not cancel reads as cut.
                logger.info("C-FIND %s from %s: cut at %d matches", query.level, entity.ae_title, cap)
                yield CANCELLED, None
                return
            count += 1
            yield PENDING, answer(identifier, row, query.level, charset)
    except archive_qr.QueryError as exc:
        logger.warning("C-FIND from %s refused: %s", entity.ae_title, exc)
        yield _failure(UNABLE_TO_PROCESS, str(exc)), None
        return
    except DatabaseError:
        logger.exception("C-FIND from %s: index unavailable", entity.ae_title)
        connection.close()
        yield OUT_OF_RESOURCES, None
        return
    logger.info("C-FIND %s from %s: %d matches", query.level, entity.ae_title, count)
    yield SUCCESS, None


def _failure(status: int, why: str) -> Dataset:
    response = Dataset()
    response.Status = status
    response.ErrorComment = why.replace("\\", "/").encode("ascii", "replace").decode()[:64]
    return response


# --- C-MOVE and C-GET ---------------------------------------------------------------------


def _retrieve_items(event: evt.Event, entity: Any, via: str) -> list[archive_qr.RetrieveItem]:
    sop_class = str(event.context.abstract_syntax)
    query, _charset = parse_identifier(event.identifier, sop_class)
    items = archive_qr.instances_to_retrieve(entity, query)
    archive_qr.record_refusals(entity, query, via=via)
    return items


UNREADABLE: Any = "unreadable"


def accepted_syntaxes(assoc: Any, sop_class: str) -> set[str]:
    """The transfer syntaxes the archive may send `sop_class` in on `assoc`: its accepted
    contexts of that class in which the archive is the storage SCU (the association it
    opened to a move destination; a C-GET requester's contexts proposed with the SCP
    role)."""
    if assoc is None:
        return set()
    return {
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if str(cx.abstract_syntax) == sop_class and cx.as_scu and cx.transfer_syntax
    }


class PixelBudget:
    """The Pixel Data bytes that this process's C-MOVE/C-GET sub-operations hold at once.

    Pynetdicom encodes each sub-operation's whole C-STORE message in memory before it is
    sent, so an instance of 90 MB of pixels (stored uncompressed, or decompressed for the
    peer) costs 90 MB while it goes out; two associations sending such instances at once
    held twice that. A sub-operation holds its instance's share from before it is handed
    to pynetdicom until the next is asked for (the message sent); one that would pass
    `settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES` with the others waits for them, and
    one larger than that waits to go alone. A wait ends after `WAIT_SECONDS` at most (a
    sub-operation whose association vanished without its generator closed must not hold
    the others for ever): it is logged and the instance sent."""

    WAIT_SECONDS = 120.0

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.held = 0
        self.peak = 0

    @property
    def capacity(self) -> int:
        return int(settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES)

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = min(size, self.capacity)
        with self._changed:
            waited = self._changed.wait_for(
                lambda: self.held == 0 or self.held + size <= self.capacity, timeout=self.WAIT_SECONDS
            )
            if not waited:
                logger.warning(
                    "retrieve: sent %d bytes of pixels past the budget after %.0f s", size, self.WAIT_SECONDS
                )
            self.held += size
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._changed:
                self.held -= size
                self._changed.notify_all()


SENDING = PixelBudget()


def pixel_bytes(dataset: Any) -> int:
    """The bytes of `dataset`'s Pixel Data (bytes, or a file range or decoded temporary
    file that pydicom reads as it writes): what its encoded C-STORE message adds beyond
    the attributes. `read_instance` leaves no value unread."""
    if not isinstance(dataset, Dataset) or "PixelData" not in dataset:
        return 0
    value = dataset["PixelData"].value
    if hasattr(value, "seek"):
        return int(buffer_length(value))
    return len(value or b"")


def _datasets(
    items: list[archive_qr.RetrieveItem], event: evt.Event, peer: Callable[[], Any]
) -> Iterator[tuple[int, Any]]:
    """Each instance read from the store, as pynetdicom's sub-operation wants it: its
    stored bytes where the peer (`peer()`, the association the C-STOREs go on) accepted
    their syntax, else decompressed for it (cloudpacs.transcoding); the instance's pixels
    held in the process's budget (`SENDING`) while pynetdicom sends it."""
    for item in items:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        try:
            dataset = archive_qr.read_instance(item)
        except Exception as exc:
            logger.warning("retrieve: instance %s could not be read: %s", item.sop_instance_uid, exc)
            # Not a dataset: pynetdicom counts a failed sub-operation and goes on.
            yield PENDING, UNREADABLE
            continue
        try:
            dataset = transcoding.for_peer(dataset, accepted_syntaxes(peer(), item.sop_class_uid))
        except transcoding.TranscodeError as exc:
            # Sent as stored, it finds no accepted context: pynetdicom counts a failed
            # sub-operation with its SOP Instance UID in the Failed SOP Instance UID List.
            logger.warning(
                "retrieve: instance %s stored in %s, which the peer does not accept, cannot be decompressed: %s",
                item.sop_instance_uid,
                item.transfer_syntax_uid,
                exc,
            )
        with SENDING.hold(pixel_bytes(dataset)):
            yield PENDING, dataset
        del dataset


def destination_contexts(items: list[archive_qr.RetrieveItem]) -> list[PresentationContext]:
    """The presentation contexts to propose to a move destination: for each SOP class, one
    with the native transfer syntaxes (an instance stored in any of them, big endian
    included, is sent in whichever the destination accepts), then one for each other
    syntax its instances are stored in (encapsulated, deflated), alone. A destination
    accepts one syntax per context: listed together in one, the instances stored in the
    syntaxes it did not pick had no context and their sub-operations failed."""
    classes: dict[str, list[str]] = {}
    for item in items:
        syntaxes = classes.setdefault(item.sop_class_uid, [])
        if item.transfer_syntax_uid not in syntaxes and item.transfer_syntax_uid not in NATIVE_STORED:
            syntaxes.append(item.transfer_syntax_uid)
    # Every class's native context first: past MAX_CONTEXTS, what is left out is a compressed syntax.
    contexts = [build_context(sop_class, NATIVE) for sop_class in classes]
    for sop_class, syntaxes in classes.items():
        contexts += [build_context(sop_class, syntax) for syntax in syntaxes]
    return contexts[:MAX_CONTEXTS]


def no_delay(event: evt.Event) -> None:
    """EVT_CONN_OPEN of an association the receiver opens (C-MOVE sub-operations, storage
    commitment reports): Nagle's algorithm off, as on the connections it accepts, the
    socket checked with poll() (cloudpacs.dicomsocket.poll_socket) and the association
    loop's pause point checked (dicomnode.reactor.wait_while_paused: pynetdicom's own
    could take a sub-operation's C-STORE response from under it)."""
    reactor.install_requestor(event.assoc)


OPENED: list[Any] = [(evt.EVT_CONN_OPEN, no_delay)]


class _Opened:
    """EVT_CONN_OPEN of a C-MOVE's association to its destination: keeps the association,
    whose accepted contexts decide in which syntax each instance goes."""

    assoc: Any = None

    def __call__(self, event: evt.Event) -> None:
        self.assoc = event.assoc


def handle_move(event: evt.Event) -> Iterator[Any]:
    """C-MOVE: the matching instances sent to a registered move destination over a new
    association. pynetdicom wants the destination first, then the count, then each
    dataset."""
    entity = _entity(event)
    request: Any = event.request
    destination_title = str(request.MoveDestination or "").strip()
    if entity is None or not entity.may_retrieve:
        # The association policy offers no retrieve context to such an entity.
        yield None, None
        return
    try:
        items = _retrieve_items(event, entity, "C-MOVE")
    except (archive_qr.QueryError, ValueError) as exc:
        logger.warning("C-MOVE from %s refused: %s", entity.ae_title, exc)
        raise
    destination = move_destination(destination_title)
    if destination is None:
        logger.warning(
            "C-MOVE from %s to %r refused: not a registered move destination", entity.ae_title, destination_title
        )
        yield None, None
        return
    host, port = destination.network_address
    opened = _Opened()
    handlers = [*OPENED, (evt.EVT_CONN_OPEN, opened)]
    yield host, port, {"contexts": destination_contexts(items), "evt_handlers": handlers} if items else {}
    archive_qr.record_retrieval(entity, items, via="C-MOVE", destination=destination.ae_title)
    logger.info(
        "C-MOVE from %s: %d instances to %s (%s:%s)", entity.ae_title, len(items), destination.ae_title, host, port
    )
    yield len(items)
    yield from _datasets(items, event, lambda: opened.assoc)


def handle_get(event: evt.Event) -> Iterator[Any]:
    """C-GET: the matching instances sent back on the same association, over the storage
    contexts the requester proposed with the SCP role."""
    entity = _entity(event)
    if entity is None or not entity.may_retrieve:
        yield 1
        yield permits.refusal(event, "retrieve"), None
        return
    try:
        items = _retrieve_items(event, entity, "C-GET")
    except (archive_qr.QueryError, ValueError) as exc:
        logger.warning("C-GET from %s refused: %s", entity.ae_title, exc)
        yield 1
        yield _failure(UNABLE_TO_PROCESS, str(exc)), None
        return
    archive_qr.record_retrieval(entity, items, via="C-GET")
    logger.info("C-GET from %s: %d instances", entity.ae_title, len(items))
    yield len(items)
    yield from _datasets(items, event, lambda: event.assoc)
