"""The DICOM receiver: association policy and event handlers, nothing else.

Handlers parse what pynetdicom hands them, call `cloudpacs.services.ingest_instance`,
map its known failures to DICOM statuses and never raise. Datasets are received
chunked to disk (pynetdicom's STORE_RECV_CHUNKED_DATASET), so a 30 MB radiograph
never sits whole in memory, and are stored as received.

Status codes answered to C-STORE, the same as STOW-RS's FailureReason for the same
refusal (cloudpacs.conformance; see docs/dicom-conformance.md):
  0x0000 stored, an identical re-send of a stored instance, or a correction (same SOP
         Instance UID, other content) that the overwrite policy applied or kept pending
  0xA700 out of resources: the image store is full or (STORAGE_BACKEND=s3) the object
         store is down, too slow or refused the PUT, or a per-association limit
         (DICOM_MAX_INSTANCES_PER_ASSOCIATION, DICOM_MAX_INSTANCE_BYTES) is exceeded;
         0xA701: the index is unavailable
  0xA900 the dataset's SOP Class differs from its presentation context
  0xC000 cannot understand: the payload cannot be parsed, or is not encoded as its
         transfer syntax says (big endian in a little endian context, say)
  0xC001 cannot understand: a Study, Series or SOP Instance UID is missing or invalid,
         or the SOP Instance UID is not the request's
  0xC010-0xC015 cannot understand: an identity conflict (cloudpacs.services
         IdentityConflict), with an Error Comment naming it
  0x0110 processing failure: anything unexpected (logged with its traceback)
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from cloudpacs import conformance, dicomsocket
from cloudpacs import services as archive
from dicomnode import commitment, connections, database, fastpath, permits, queryretrieve, reactor, uids, worklist
from dicomnode.connections import Admission, Limits, RefusalLog, Refused
from dicomnode.contexts import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from dicomnode.handoff import HandoffMixin
from dicomnode.models import AssociationLog
from facilities.models import ApplicationEntity, Modality
from facilities.services import application_entity_for_ae_title

logger = logging.getLogger("dicomnode")

SUCCESS = 0x0000
OUT_OF_RESOURCES = conformance.OUT_OF_RESOURCES
INDEX_UNAVAILABLE = conformance.INDEX_UNAVAILABLE
PROCESSING_FAILURE = conformance.PROCESSING_FAILURE
NOT_AUTHORIZED = permits.NOT_AUTHORIZED

# A-ASSOCIATE-RJ: rejected-permanent, by the service user, with the reason; or, when every
# place for an association is taken, rejected-transient by the service provider
# (presentation related), local limit exceeded.
RJ_PERMANENT = 0x01
RJ_TRANSIENT = 0x02
RJ_SOURCE_SERVICE_USER = 0x01
RJ_SOURCE_PROVIDER_PRESENTATION = 0x03
RJ_LOCAL_LIMIT_EXCEEDED = 0x02
RJ_NO_REASON = 0x01
RJ_CALLING_AE_NOT_RECOGNISED = 0x03
RJ_CALLED_AE_NOT_RECOGNISED = 0x07

VERIFICATION = "1.2.840.10008.1.1"

# ", worker N" in the log lines of a worker process (DICOM_RECEIVER_PROCESSES > 1).
PROCESS_NAME = ""


class _Association:
    """What the receiver remembers about one association, kept on the pynetdicom object
    from the request to its end, when it becomes one AssociationLog row."""

    def __init__(self, assoc: Any) -> None:
        request = assoc.requestor.primitive
        self.started_at = timezone.now()
        self.calling = str(request.calling_ae_title).strip()
        self.called = str(request.called_ae_title).strip()
        try:
            self.address: str | None = str(assoc.requestor.address)
            self.port: int | None = int(assoc.requestor.port)
        except Exception:
            self.address, self.port = None, None
        self.tls = isinstance(getattr(assoc.dul.socket, "socket", None), ssl.SSLSocket)
        # The log row's, given now: a refusal recorded during the association names it.
        self.uuid = uuid.uuid4()
        self.modality: Modality | None = None
        # The registered application entity (a console's has its modality above).
        self.entity: ApplicationEntity | None = None
        self.accepted = False
        # Whether this association took one of the DICOM_MAX_ASSOCIATIONS places.
        self.holds_place = False
        self.logged = False
        # Dataset bytes of the message being received (checked against
        # DICOM_MAX_INSTANCE_BYTES as they arrive), and why the receiver aborted, if it did.
        self.receiving = 0
        self.abort_reason = ""
        self.counts: Counter[str] = Counter()
        # SHA-256 of each dataset, computed from the P-DATA fragments as they arrive (on
        # pynetdicom's reading thread): the running one, the completed ones not yet
        # matched to their message, and by received file for handle_store.
        self.hashing: Any = None
        self.completed: deque[str] = deque()
        self.digests: dict[str, str] = {}

    def write_log(self, outcome: str, reason: str = "") -> None:
        """Write this association's row, once. Never raises: the log must not fail a
        release, nor turn a rejection into something else."""
        if self.logged:
            return
        self.logged = True
        counts = self.counts
        try:
            AssociationLog.objects.create(
                uuid=self.uuid,
                calling_ae_title=self.calling[:16],
                called_ae_title=self.called[:16],
                peer_address=self.address,
                peer_port=self.port,
                modality=self.modality,
                outcome=outcome,
                reason=reason[:255],
                started_at=self.started_at,
                ended_at=timezone.now(),
                instances_stored=counts["stored"],
                instances_duplicate=counts["duplicate"],
                instances_conflict=counts["conflict"],
                instances_failed=counts["failed"],
                bytes_received=counts["bytes"],
                echoes=counts["echo"],
                tls=self.tls,
            )
        except Exception:
            logger.exception("could not write the association log for %s from %s", self.calling, self.address)


def _state(assoc: Any) -> _Association | None:
    return getattr(assoc, "_yunying", None)


def _peer(assoc: Any) -> str:
    try:
        return f"{assoc.requestor.address}:{assoc.requestor.port}"
    except Exception:
        return "?"


def _reject(
    assoc: Any, reason: int, why: str, *, result: int = RJ_PERMANENT, source: int = RJ_SOURCE_SERVICE_USER
) -> None:  # assoc: pynetdicom Association
    """Send the A-ASSOCIATE-RJ; the log line and the association log row are rate-limited
    per peer address and calling AE title, so a peer sending requests in a loop cannot
    flood either."""
    calling = assoc.requestor.primitive.calling_ae_title
    called = assoc.requestor.primitive.called_ae_title
    state = _state(assoc)
    refusals: RefusalLog | None = getattr(assoc._server, "refusals", None)
    address = state.address if state is not None else None
    extra = refusals.allow((address or "?", "rejected", str(calling))) if refusals is not None else ""
    if extra is not None:
        logger.warning(
            "association rejected: %s (calling %r, called %r, peer %s)%s", why, calling, called, _peer(assoc), extra
        )
        if state is not None:
            state.write_log(AssociationLog.Outcome.REJECTED, why + extra)
    elif state is not None:
        state.logged = True
    assoc.acse.send_reject(result, source, reason)
    assoc.kill()


def handle_requested(event: evt.Event) -> None:
    """The association policy: a registered, active application entity calling; our
    called AE; and, when DICOM_CHECK_PEER_ADDRESS is on, the entity's registered host.
    What the entity may do once admitted is checked per service (dicomnode.permits)."""
    assoc: Any = event.assoc
    try:
        _take_connection(assoc)
        close_old_connections()
        state = assoc._yunying = _Association(assoc)
        calling, called = state.calling, state.called
        request = assoc.requestor.primitive
        if not request.presentation_context_definition_list or not request.application_context_name:
            # pynetdicom would accept a request cut after its fixed fields (PS3.8 9.3.2
            # requires both items): nothing could be sent on such an association.
            _reject(assoc, RJ_NO_REASON, "no application context or presentation context proposed")
            return
        if called != settings.DICOM_AE_TITLE:
            _reject(assoc, RJ_CALLED_AE_NOT_RECOGNISED, "called AE title is not ours")
            return
        entity = application_entity_for_ae_title(calling)
        if entity is None:
            _reject(assoc, RJ_CALLING_AE_NOT_RECOGNISED, "calling AE title not recognised")
            return
        host = entity.network_address[0]
        if settings.DICOM_CHECK_PEER_ADDRESS and host and not _address_matches(host, assoc):
            _reject(assoc, RJ_CALLING_AE_NOT_RECOGNISED, f"peer address is not {host}")
            return
        admission: Admission | None = getattr(assoc._server, "admission", None)
        if admission is not None and not admission.take_association(state.address or "?"):
            _reject(
                assoc,
                RJ_LOCAL_LIMIT_EXCEEDED,
                f"all {admission.limits.max_associations} associations are in use (DICOM_MAX_ASSOCIATIONS)",
                result=RJ_TRANSIENT,
                source=RJ_SOURCE_PROVIDER_PRESENTATION,
            )
            return
        if not entity.may_retrieve:
            # C-MOVE answers nothing before it names its destination, so an entity that
            # may not retrieve is offered no retrieve context at all.
            assoc.acceptor.supported_contexts = [
                cx
                for cx in assoc.acceptor.supported_contexts
                if cx.abstract_syntax not in queryretrieve.RETRIEVE_SOP_CLASSES
            ]
        state.entity = entity
        state.modality = entity.modality
        state.holds_place = admission is not None
        state.accepted = True
    except Exception:
        logger.exception("association policy failed; rejecting (peer %s)", _peer(assoc))
        try:
            _reject(assoc, RJ_NO_REASON, "policy check failed")
        except Exception:
            assoc.abort()
    finally:
        if _accepted(assoc) is None:
            _give_connection(assoc)


def _take_connection(assoc: Any) -> None:
    """This association's thread takes the database connection an ended association
    left (dicomnode.database), if one was kept."""
    idle: database.IdleConnections | None = getattr(assoc._server, "idle_connections", None)
    if idle is not None:
        idle.take()


def _give_connection(assoc: Any) -> None:
    """The association ends: its thread's database connection is kept for the next one
    (dicomnode.database), or closed."""
    idle: database.IdleConnections | None = getattr(assoc._server, "idle_connections", None)
    if idle is not None:
        idle.give()
    else:
        connection.close()


def _address_matches(host: str, assoc: Any) -> bool:
    peer = str(assoc.requestor.address)
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        addresses = {host}
    return peer in addresses


def _accepted(assoc: Any) -> _Association | None:
    state = _state(assoc)
    return state if state is not None and state.accepted else None


def handle_accepted(event: evt.Event) -> None:
    state = _accepted(event.assoc)
    if state is not None and state.entity is not None:
        logger.info(
            "association accepted: %s (%s, %s) from %s%s%s",
            state.entity.ae_title,
            state.entity.facility.short_name,
            state.entity.role,
            _peer(event.assoc),
            _certificate_subject(event.assoc),
            PROCESS_NAME,
        )


def _certificate_subject(assoc: Any) -> str:
    """', TLS as <subject>' for the log line of an association over TLS."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    certificate: Any = sock.getpeercert() or {}
    subject = ", ".join(f"{key}={value}" for rdn in certificate.get("subject", ()) for key, value in rdn)
    return f", TLS as {subject}" if subject else ", TLS"


def handle_closed(event: evt.Event) -> None:
    """Released or aborted: log the counts, write the association's row and give this
    thread's DB connection to the next association (dicomnode.database)."""
    state = _accepted(event.assoc)
    _discard_partial_dataset(event.assoc)
    if state is not None:
        released = event.event == evt.EVT_RELEASED
        how = "released" if released else "aborted"
        counts = state.counts
        state.write_log(
            AssociationLog.Outcome.RELEASED if released else AssociationLog.Outcome.ABORTED, state.abort_reason
        )
        logger.info(
            "association %s: %s from %s, stored %d, duplicate %d, conflict %d, failed %d, echo %d, %d bytes"
            " (%d hashed on arrival)",
            how,
            state.calling,
            _peer(event.assoc),
            counts["stored"],
            counts["duplicate"],
            counts["conflict"],
            counts["failed"],
            counts["echo"],
            counts["bytes"],
            counts["hashed"],
        )
    # The rows of the files synced since the last instance's statement, with this thread's
    # connection before it goes.
    archive.clear_synced_files()
    _give_connection(event.assoc)


def _discard_partial_dataset(assoc: Any) -> None:
    """An association that ends in the middle of a C-STORE leaves pynetdicom's file of
    the dataset received so far: remove it, or every abort would leave one behind until
    the receiver restarts."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    with contextlib.suppress(OSError, ValueError):
        partial.close()
    with contextlib.suppress(OSError):
        os.unlink(partial.name)


def _abort_oversized(assoc: Any, state: _Association) -> None:
    """A C-STORE announces no length: once the dataset's bytes pass DICOM_MAX_INSTANCE_BYTES
    the only way to stop it is to abort the association. Runs on pynetdicom's reading
    thread, the one thread that writes to the socket, between two PDUs."""
    limit = settings.DICOM_MAX_INSTANCE_BYTES
    state.abort_reason = f"instance over {limit} bytes (DICOM_MAX_INSTANCE_BYTES): aborted after {state.receiving}"
    logger.warning(
        "aborting the association of %s from %s: an instance passed %d bytes (DICOM_MAX_INSTANCE_BYTES)"
        " after %d bytes had arrived; nothing of it is kept",
        state.calling,
        _peer(assoc),
        limit,
        state.receiving,
    )
    socket_ = assoc.dul.socket
    if isinstance(socket_, CappedAssociationSocket):
        socket_.abort_now()


def handle_pdu(event: evt.Event) -> None:
    """Hash each dataset while it is received, so that storing it need not read the file
    again to hash it: for a 15 MB radiograph that re-read was the largest single cost of
    the handler. The bytes hashed are the ones pynetdicom appends to its file (each
    dataset fragment without its message control header), so the digest is the file's
    dataset digest. Runs on pynetdicom's reading thread, before the PDU is decoded;
    hashlib releases the GIL, so the hashing overlaps the association's other work."""
    pdu: Any = event.pdu  # type: ignore[attr-defined]
    if not isinstance(pdu, P_DATA_TF):
        return
    hash_pdvs(
        event.assoc,
        [(item.presentation_context_id, item.presentation_data_value) for item in pdu.presentation_data_value_items],
    )


def hash_pdvs(assoc: Any, items: Sequence[tuple[Any, Any]]) -> None:
    """handle_pdu's work on a P-DATA-TF, from its (presentation context ID, value) pairs:
    what dicomnode.reactor calls instead of making the PDU and its event (`PDV_HANDLERS`)."""
    state = _accepted(assoc)
    if state is None:
        return
    if state.abort_reason:
        return
    for _, data in items:
        if not data:
            continue
        header = data[0]
        if header & 1:
            # A command fragment: a new message; after its last, its dataset may follow.
            state.receiving = 0
            if header & 2:
                state.hashing = hashlib.sha256()
            continue
        state.receiving += len(data) - 1
        if state.receiving > settings.DICOM_MAX_INSTANCE_BYTES:
            _abort_oversized(assoc, state)
            return
        if state.hashing is not None:
            state.hashing.update(memoryview(data)[1:])
            if header & 2:
                state.completed.append(state.hashing.hexdigest())
                state.hashing = None
        if header & 2:
            state.receiving = 0


def handle_dimse(event: evt.Event) -> None:
    """A message is complete (same thread, right after its last PDU went through
    handle_pdu): give the digest just completed to its C-STORE's received file."""
    state = _accepted(event.assoc)
    if state is None or not state.completed:
        return
    digest = state.completed.pop()
    state.completed.clear()
    message: Any = event.message  # type: ignore[attr-defined]
    path = getattr(message, "_data_set_path", None)
    if isinstance(message, C_STORE_RQ) and path is not None:
        state.digests[str(path)] = digest


def handle_echo(event: evt.Event) -> int:
    state = _accepted(event.assoc)
    if state is not None:
        state.counts["echo"] += 1
    return SUCCESS


def handle_store(event: evt.Event) -> int | Dataset:
    """Store one instance; answer only after the file and its index row are durable.

    The association's thread keeps one database connection from EVT_REQUESTED (which
    calls close_old_connections) to release: reconnecting per instance would cost more
    than storing it, on SQLite (a WAL checkpoint at close) as on PostgreSQL. On
    PostgreSQL that connection then goes to the next association (dicomnode.database)."""
    state = _accepted(event.assoc)
    request: Any = event.request
    sop_instance_uid = str(request.AffectedSOPInstanceUID or "").strip()
    if state is None:
        return PROCESSING_FAILURE
    modality = state.modality
    if modality is None or state.entity is None or not state.entity.may_store:
        state.counts["failed"] += 1
        logger.warning("C-STORE %s from %s refused: not permitted to store", sop_instance_uid, state.calling)
        return _failure(NOT_AUTHORIZED, f"{state.calling} may not store here")
    sha256 = state.digests.pop(str(event.dataset_path), None)
    if sha256 is not None:
        state.counts["hashed"] += 1
    state.counts["requests"] += 1
    size = _received_size(event)
    state.counts["bytes"] += size
    if state.counts["requests"] > settings.DICOM_MAX_INSTANCES_PER_ASSOCIATION:
        status = OUT_OF_RESOURCES
        why = f"over the limit of {settings.DICOM_MAX_INSTANCES_PER_ASSOCIATION} instances per association"
    elif size > settings.DICOM_MAX_INSTANCE_BYTES:
        status = OUT_OF_RESOURCES
        why = f"{size} bytes, over the limit of {settings.DICOM_MAX_INSTANCE_BYTES} bytes per instance"
    else:
        try:
            status, why = _ingest(event, state, modality, sop_instance_uid, sha256)
        except archive.IdentityConflict as conflict:
            # Recorded by the archive (IngestConflict, pointing at this association's log
            # row); the answer names the conflict and nothing of what the archive holds.
            state.counts["conflict"] += 1
            logger.warning(
                "C-STORE %s from %s (%s) refused with 0x%04X: %s",
                sop_instance_uid,
                modality.ae_title,
                _peer(event.assoc),
                conflict.status,
                conflict,
            )
            return _failure(conflict.status, conflict.comment)
        if status == SUCCESS:
            return status
    # Not stored: pynetdicom removes the received file after this handler returns.
    state.counts["failed"] += 1
    logger.warning(
        "C-STORE %s from %s (%s) failed with 0x%04X: %s",
        sop_instance_uid,
        modality.ae_title,
        _peer(event.assoc),
        status,
        why,
    )
    return _failure(status, why)


def _failure(status: int, why: str) -> Dataset:
    """The C-STORE response's status with the reason in Error Comment (0000,0902), so the
    console's log says why, not only a number. LO: at most 64 characters, no backslash."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = why.replace("\\", "/").encode("ascii", "replace").decode()[:64]
    return response


def _received_size(event: evt.Event) -> int:
    """The dataset as pynetdicom wrote it to disk, with its File Meta header."""
    try:
        return os.stat(event.dataset_path).st_size
    except (OSError, AttributeError):
        return 0


def _ingest(
    event: evt.Event, state: _Association, modality: Modality, sop_instance_uid: str, sha256: str | None
) -> tuple[int, str]:
    try:
        context = event.context
        result = archive.ingest_instance(
            event.dataset_path,
            transfer_syntax_uid=str(context.transfer_syntax),
            sop_class_uid=str(context.abstract_syntax),
            sop_instance_uid=sop_instance_uid,
            modality=modality,
            # pynetdicom's file is ours to move: it only tries to unlink it afterwards.
            adopt=True,
            sha256=sha256,
            association=state.uuid,
        )
    except archive.IdentityConflict:
        raise
    except archive.IngestError as exc:
        # The status STOW-RS gives for the same refusal (cloudpacs.conformance).
        return exc.status, str(exc)
    except DatabaseError as exc:
        logger.exception("index error storing %s from %s", sop_instance_uid, modality.ae_title)
        # Reconnect for the next instance of this association.
        connection.close()
        return INDEX_UNAVAILABLE, f"index unavailable: {exc}"
    except Exception as exc:
        logger.exception("unexpected error storing %s from %s", sop_instance_uid, modality.ae_title)
        return PROCESSING_FAILURE, f"{type(exc).__name__}: {exc}"
    # A correction applied or kept pending is stored content: counted as stored.
    duplicate = result.outcome == archive.IngestOutcome.DUPLICATE
    state.counts["duplicate" if duplicate else "stored"] += 1
    return SUCCESS, ""


# The handlers of EVT_PDU_RECV that dicomnode.reactor calls with a P-DATA-TF's values.
PDV_HANDLERS: dict[Any, reactor.PDVHandler] = {handle_pdu: hash_pdvs}

HANDLERS: list[Any] = [
    (evt.EVT_REQUESTED, handle_requested),
    (evt.EVT_ACCEPTED, handle_accepted),
    (evt.EVT_RELEASED, handle_closed),
    (evt.EVT_ABORTED, handle_closed),
    (evt.EVT_PDU_RECV, handle_pdu),
    (evt.EVT_DIMSE_RECV, handle_dimse),
    (evt.EVT_C_ECHO, handle_echo),
    (evt.EVT_C_STORE, handle_store),
    (evt.EVT_SOP_EXTENDED, queryretrieve.handle_sop_extended),
    (evt.EVT_C_FIND, queryretrieve.handle_find),
    (evt.EVT_C_MOVE, queryretrieve.handle_move),
    (evt.EVT_C_GET, queryretrieve.handle_get),
    (evt.EVT_N_ACTION, commitment.handle_n_action),
    (evt.EVT_N_CREATE, permits.requiring(permits.STORE, "MPPS", worklist.handle_n_create)),
    (evt.EVT_N_SET, permits.requiring(permits.STORE, "MPPS", worklist.handle_n_set)),
]


# An A-ASSOCIATE-RQ is a few kilobytes even with every context a console proposes; a
# P-DATA-TF may not exceed the maximum PDU the receiver offered (PS3.8 9.3.5).
ASSOCIATE_RQ_CEILING = 1024 * 1024
UNLIMITED_PDU_CEILING = 64 * 1024 * 1024


def pdu_ceiling() -> int:
    """The largest PDU body the receiver will read. pynetdicom reads whatever length a PDU
    header claims into memory, so without this one peer claiming 4 GB could take it."""
    offered = settings.DICOM_MAX_PDU or UNLIMITED_PDU_CEILING
    return max(offered, ASSOCIATE_RQ_CEILING)


class CappedAssociationSocket(dicomsocket.PollingSocket):
    """pynetdicom's socket with a ceiling on what it reads, the A-ASSOCIATE-RQ that the
    front door read already given back first, reads ahead (`prefix` holds what was read
    and not yet asked for), an abort that needs no state machine, and the check for bytes
    to read asking poll() (cloudpacs.dicomsocket.PollingSocket)."""

    prefix: reactor.ReadAhead
    aborted = False

    @property
    def ready(self) -> bool:
        if self.aborted or getattr(self, "prefix", None):
            return True
        return super().ready

    def recv(self, nr_bytes: int) -> bytes | memoryview:  # type: ignore[override]
        # pynetdicom asks for a PDU's header (6 bytes) and then for its whole body at once.
        if nr_bytes > pdu_ceiling():
            logger.warning(
                "closing the connection from %s: a PDU of %d bytes is larger than the %d this receiver reads",
                self.assoc.requestor.address,
                nr_bytes,
                pdu_ceiling(),
            )
            return b""  # pynetdicom treats a short read as the connection closed
        if self.aborted:
            return b""
        self.seen_readable = False
        # Not pynetdicom's loop of 4 KB reads: dicomnode.reactor.read_ahead, the bytes read
        # ahead kept in `prefix` (which starts as the A-ASSOCIATE-RQ the front door read).
        return reactor.read_ahead(self.socket, self.prefix, nr_bytes)

    def abort_now(self) -> None:
        """Send an A-ABORT (service user) and shut the connection: pynetdicom's reader then
        finds it closed, as after a peer's abort, and ends the association at once. Only
        from pynetdicom's reading thread."""
        sock = self.socket
        if sock is None:
            return
        self.aborted = True
        pdu = A_ABORT_RQ()
        pdu.source = 0x00
        pdu.reason_diagnostic = 0x00
        # Under the DUL's send lock: an answer may be being written from the association's
        # thread (dicomnode.reactor.send_now).
        lock = getattr(self.assoc.dul, "send_lock", None) or contextlib.nullcontext()
        with lock, contextlib.suppress(OSError, ValueError):
            sock.sendall(pdu.encode())
        with contextlib.suppress(OSError, ValueError):
            sock.shutdown(socket.SHUT_RDWR)


class CappedRequestHandler(RequestHandler):
    """Hands a connection whose A-ASSOCIATE-RQ has arrived to pynetdicom, and gives its
    place back to the front door when the association's thread ends."""

    def __init__(
        self,
        request: Any,
        client_address: Any,
        server: Any,
        associate_rq: connections.CheckedAssociateRQ | None = None,
        key: str | None = None,
    ) -> None:
        # The A-ASSOCIATE-RQ the front door read (and decoded): the socket gives its bytes
        # back first, and the DUL takes it decoded.
        self.associate_rq = associate_rq
        self.prefix = associate_rq.data if associate_rq is not None else b""
        self.started = False
        # What the front door counts this connection under (its peer's address).
        self.key = key if key is not None else _host(client_address)
        super().__init__(request, client_address, server)

    def handle(self) -> None:
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        self.started = True

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        reactor.install(assoc, self.associate_rq, pdv_handlers=PDV_HANDLERS)
        fastpath.install(assoc)
        sock: Any = assoc.dul.socket
        sock.__class__ = CappedAssociationSocket
        sock.prefix = reactor.ReadAhead(self.prefix)
        server = self.server
        association_loop = assoc.run

        def run() -> None:
            try:
                association_loop()
            finally:
                if isinstance(server, NoDelayAssociationServer):
                    server.association_ended(assoc, self.key)

        assoc.run = run  # type: ignore[method-assign]
        return assoc


def _host(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)


def admission_key(address: str) -> tuple[str, bool]:
    """(what the front door counts a new connection under, whether it is a trusted
    proxy's): a proxied connection is counted under its proxy until its PROXY header
    names the peer."""
    if connections.trusted_proxy(address, settings.DICOM_PROXY_ADDRESSES):
        return f"proxy {address}", True
    return address, False


class NoDelayAssociationServer(ThreadedAssociationServer):
    """The receiver's server: the front door of dicomnode.connections (per-address and
    waiting-pool limits at accept, the A-ASSOCIATE-RQ deadline on the connection's own
    thread, TLS handshake included), then pynetdicom for the association. Nagle's
    algorithm is off on every accepted socket: a C-STORE response is small and the
    sender waits for it."""

    tls_context: ssl.SSLContext | None = None
    admission: Admission
    refusals: RefusalLog
    # A burst of connections (a flood, or every console after an outage) must not
    # overflow the kernel's accept queue (5 by default), where a console's connection
    # would wait seconds for its SYN to be retried.
    request_queue_size = 128
    # Connection threads wait at most DICOM_ASSOCIATE_TIMEOUT; shutting down need not.
    daemon_threads = True
    block_on_close = False

    # The database connections of ended associations, for the next ones (dicomnode.database).
    idle_connections: database.IdleConnections

    def shutdown(self) -> None:
        super().shutdown()
        idle = getattr(self, "idle_connections", None)
        if idle is not None:
            idle.close_all()

    def service_actions(self) -> None:
        """Nothing. pynetdicom's collects all garbage every 60 turns of the accept loop
        (a turn is a connection, or 0.5 s when idle): a full collection holds the GIL
        while it walks every tracked object, and every association waits (300,000 objects
        after start-up; 0.6-0.8 s at a load of 30). Cyclic garbage is left to Python's
        own generational collector, and the start-up heap is frozen (`settle_heap`)."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """On the accept loop: refuse at once what is over a limit (no thread, no wait on
        the database), start the connection's thread for the rest."""
        address = _host(client_address)
        key, proxied = admission_key(address)
        refused = self.admission.admit(key, proxied=proxied)
        if refused is not None:
            port = client_address[1] if isinstance(client_address, tuple) else None
            self.refusals.record(address, port, refused, tls=self.tls_context is not None, write_row_here=False)
            connections.close(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.admission.closed(key, waiting=True)
            raise

    def finish_request(self, request: Any, client_address: Any) -> None:
        """On the connection's thread: from a trusted proxy its PROXY header, then the TLS
        handshake and the whole A-ASSOCIATE-RQ, all within DICOM_ASSOCIATE_TIMEOUT, then
        the association."""
        address = _host(client_address)
        port = client_address[1] if isinstance(client_address, tuple) else None
        # What the admission counts this connection under: the proxy's key until its
        # PROXY header names the peer; None once a refusal took it out of every count.
        key: str | None
        key, proxied = admission_key(address)
        timeout = self.admission.limits.associate_timeout
        deadline = time.monotonic() + timeout
        original_timeout = request.gettimeout()
        try:
            if proxied:
                request.settimeout(timeout)
                peer = connections.read_proxy_header(request, deadline, timeout)
                if peer is not None:
                    address, port = peer
                    client_address = peer
                    refused = self.admission.readdress(key, address)
                    if refused is not None:
                        key = None
                        raise refused
                    key = address
            if self.tls_context is not None:
                request.settimeout(timeout)
                try:
                    request = self.tls_context.wrap_socket(request, server_side=True)
                except (OSError, ValueError) as exc:
                    raise Refused("tls", f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}") from None
            associate_rq = connections.read_associate_rq(request, deadline, timeout)
        except Refused as refused:
            if refused.abort_reason is not None:
                connections.send_abort(request, refused.abort_reason)
            connections.close(request)
            if key is not None:
                self.admission.closed(key, waiting=True)
            if refused.kind == "connection-lost":
                logger.debug("connection from %s:%s: %s", address, port, refused.why)
            else:
                self.refusals.record(address, port, refused, tls=self.tls_context is not None)
            return
        except BaseException:
            if key is not None:
                self.admission.closed(key, waiting=True)
            raise
        request.settimeout(original_timeout)
        self.admission.request_complete(key)
        started = False
        try:
            handler: Any = CappedRequestHandler(request, client_address, self, associate_rq=associate_rq, key=key)
            started = getattr(handler, "started", False)
        finally:
            if not started:
                self.admission.closed(key, waiting=False)

    def association_ended(self, assoc: Any, address: str) -> None:
        state = _state(assoc)
        if state is not None and state.holds_place:
            self.admission.give_back_association()
        self.admission.closed(address, waiting=False)


class WorkerServer(HandoffMixin, NoDelayAssociationServer):
    """The server of one worker process (DICOM_RECEIVER_PROCESSES > 1): connections come
    from the parent (dicomnode.processes), admitted already; everything after the accept
    is as in a single process, with the limits asked of the parent."""

    admission: Any

    def server_bind(self) -> None:
        # No socket of its own: the parent's handoff socket is put in its place.
        pass

    def server_activate(self) -> None:
        pass

    def process_request(self, request: Any, client_address: Any) -> None:
        ThreadedAssociationServer.process_request(self, request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("receiver worker: an error serving %s", client_address)


class SupportedContexts(list[PresentationContext]):
    """The server's presentation contexts, which pynetdicom deep-copies for every
    association (transport.RequestHandler._create_association), so that negotiating one
    association never changes another's. `copy.deepcopy` walked ~200 contexts and rebuilt
    each of their ~4,000 transfer syntax UIDs; this copy makes the same independent
    objects by copying what a context holds: its list of transfer syntaxes, and values
    that cannot change (UIDs are strings, the rest numbers, booleans or None: pinned by
    tests/test_dicomnode_server.py)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return [_copied_context(context) for context in self]


def _copied_context(context: PresentationContext) -> PresentationContext:
    copied = PresentationContext.__new__(type(context))
    copied.__dict__.update(context.__dict__)
    copied._transfer_syntax = list(context._transfer_syntax)
    return copied


def front_door_limits() -> Limits:
    return Limits(
        associate_timeout=settings.DICOM_ASSOCIATE_TIMEOUT,
        max_associations=settings.DICOM_MAX_ASSOCIATIONS,
        max_waiting=settings.DICOM_MAX_WAITING_CONNECTIONS,
        max_per_address=settings.DICOM_MAX_CONNECTIONS_PER_ADDRESS,
    )


def tls_context() -> ssl.SSLContext | None:
    """The receiver's TLS context from DICOM_TLS_CERT/KEY/CA, or None for plain TCP. With a
    CA, a client certificate signed by it is required (PS3.15 B.1, the basic TLS profile,
    with BCP 195's floor of TLS 1.2)."""
    if not settings.DICOM_TLS_CERT:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.DICOM_TLS_CERT, settings.DICOM_TLS_KEY or None)
    if settings.DICOM_TLS_CA:
        context.load_verify_locations(cafile=settings.DICOM_TLS_CA)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def build_ae() -> AE:
    _config.STORE_RECV_CHUNKED_DATASET = True
    # The standard's UIDs in every association request checked once, not at each copy.
    uids.install()
    # pynetdicom formats every C-FIND/C-MOVE/C-GET identifier it sends or receives for its
    # debug log, whether that log is on or not: a whole pretty-printed dataset per match.
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_REQUEST_IDENTIFIERS = False
    # Nor its "standard" handlers, bound to every association: each PDU and each DIMSE
    # message, received or sent, is described line by line for a debug log that the
    # receiver keeps at WARNING (settings.LOGGING), four events per C-STORE.
    _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    ae.maximum_pdu_size = settings.DICOM_MAX_PDU
    # The policy lives in handle_requested, against the registered modalities.
    ae.require_called_aet = False
    ae.require_calling_aet = []
    # pynetdicom counts every association thread alive, rejected ones still closing
    # included; the receiver's own limit (DICOM_MAX_ASSOCIATIONS, in handle_requested)
    # counts only registered titles' associations, and the front door bounds the rest.
    ae.maximum_associations = 10 * (settings.DICOM_MAX_ASSOCIATIONS + settings.DICOM_MAX_WAITING_CONNECTIONS)
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.network_timeout = 120
    ae.add_supported_context(VERIFICATION)
    for sop_class in [*worklist.SOP_CLASSES, *queryretrieve.SOP_CLASSES, *commitment.SOP_CLASSES]:
        ae.add_supported_context(sop_class)
    for sop_class in STORAGE_SOP_CLASSES:
        # Both roles as the requester proposes them: a C-GET's requester proposes the SCP
        # role for the classes it takes back (PS3.4 C.4.3.1); a console proposes none.
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    return ae


def settle_heap() -> None:
    """Take what start-up loaded (Django, pydicom's and pypinyin's dictionaries, the AE's
    presentation contexts) out of the garbage collector's reach: an automatic full
    collection then walks only what was made since, not the whole heap while every
    association waits on the GIL. Called once a receiver process has warmed up; not in
    a process that serves from a thread beside other work (the tests)."""
    gc.collect()
    gc.freeze()


def start_worker_server(handoff: socket.socket, admission: Any, address: tuple[str, int]) -> WorkerServer:
    """A worker's server, serving from a daemon thread the connections the parent hands
    over on `handoff`, with `admission` the parent's limits (dicomnode.processes)."""
    archive.warm_up_ingest()
    ae = build_ae()
    server: WorkerServer = ae.make_server(  # type: ignore[assignment]
        address, evt_handlers=HANDLERS, server_class=WorkerServer, request_handler=CappedRequestHandler
    )
    if server.socket is not None:
        server.socket.close()
    server.socket = handoff
    server.contexts = SupportedContexts(server.contexts)
    server.parent_gone = threading.Event()
    server.tls_context = tls_context()
    server.admission = admission
    server.refusals = RefusalLog()
    server.idle_connections = database.IdleConnections()
    ae._servers.append(server)
    settle_heap()
    threading.Thread(target=server.serve_forever, name="dicomnode-worker", daemon=True).start()
    return server


def start_server(host: str | None = None, port: int | None = None, *, block: bool = True) -> NoDelayAssociationServer:
    """Start the receiver. With block=False it serves from a daemon thread and returns at
    once; call `.shutdown()` on the result to stop it. With block=True it returns after
    `.shutdown()` is called from another thread (or a signal handler)."""
    archive.warm_up_ingest()
    ae = build_ae()
    tls = tls_context()
    address = (host if host is not None else settings.DICOM_HOST, settings.DICOM_PORT if port is None else port)
    server: NoDelayAssociationServer = ae.make_server(  # type: ignore[assignment]
        address, evt_handlers=HANDLERS, server_class=NoDelayAssociationServer, request_handler=CappedRequestHandler
    )
    server.tls_context = tls
    server.contexts = SupportedContexts(server.contexts)
    server.admission = Admission(front_door_limits)
    server.refusals = RefusalLog()
    server.idle_connections = database.IdleConnections()
    ae._servers.append(server)
    host_bound, port_bound = server.server_address[:2]
    logger.info(
        "DICOM receiver %s listening on %s:%s (%s)",
        settings.DICOM_AE_TITLE,
        host_bound,
        port_bound,
        "TLS, client certificates required" if tls and settings.DICOM_TLS_CA else "TLS" if tls else "plain TCP",
    )
    if block:
        settle_heap()
        server.serve_forever()
    else:
        thread = threading.Thread(target=server.serve_forever, name=f"dicomnode@{port_bound}", daemon=True)
        thread.start()
    return server
