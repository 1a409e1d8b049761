"""pynetdicom's two association loops, woken by events instead of polling every millisecond.

Stock pynetdicom runs two threads per association that poll: the DUL thread (the socket
and the queue of PDUs to send) sleeps 1 ms whenever it finds nothing to do, and the
association thread (decoded DIMSE messages, release and abort requests) sleeps 1 ms on
every turn. A C-STORE waits on both between its last PDU and its response, and a
response waits once more before it is sent: about 2 ms of a small instance's 5-6 ms
(docs/benchmarks-ingest.md, run 6), which no change to the handler removes.

Here the DUL thread waits in poll() on its socket and on an eventfd written whenever a
primitive is queued for it (and when it is told to stop); the association thread waits
on a threading.Event set whenever a DIMSE message or a release/abort primitive is queued
for it (and when the DUL thread ends). Both still wake every IDLE_WAIT seconds when
nothing happens, for the timers (ARTIM, the network idle timeout) that they check as
pynetdicom's loops do: an idle association wakes 20 times a second, not 2000.

The loops below are the stock ones with the sleeps replaced; they depend on pynetdicom's
internals, so they are installed only on the version whose loops they were written
against (`PIN`: the version, with the source digests of the two stock loops and of what
`install` relies on). On any other version `install` leaves the association as it is,
logs once, and tests/test_dicomnode_reactor.py fails until the loops are checked against
the new code.

pynetdicom's DUL provider is a thread whose target, its own polling loop, is bound when
the provider is made, before `install` can change its class: changing the class alone
left that loop running (until run 14 of docs/benchmarks-ingest.md the event-driven DUL
loop never ran). `EventDrivenDUL.run`, which the thread calls when it starts, runs the
event-driven loop instead; tests/test_dicomnode_reactor.py counts the receiver's DUL
threads' polling sleeps (none) to show it is the one running.

The DUL thread reads through `read_ahead`: pynetdicom's socket reads 4 KB per recv()
(3,700 calls for a 15 MB radiograph), after a select() for each PDU, and each of those
calls lets go of the interpreter lock and must take it back. With one association that
costs little; with several, each re-acquisition waits behind the other associations'
Python work and hands the lock from thread to thread, from core to core (the "convoy" of
threads doing I/O among threads computing): CPU per instance rose with the number of
associations (docs/benchmarks-ingest.md, run 12). Here one recv() usually brings a whole
PDU, often the next one's header too, and what it brought is looked at before the socket.

A P-DATA-TF PDU that arrives while the association transfers data (Sta6) goes from the
socket to the DIMSE provider in one step (`EventDrivenDUL._read_pdu_data`): pynetdicom
copies each PDU five times on its way (header and body joined, `bytes()`, the items'
slice, each item's slice, each fragment's slice without its control header), puts an
event and the PDU on two queues, and takes them off again to look the state and the
event up in its transition table, whose answer there is always DT-2, the same state. Here
the body is read once and each fragment handed over as a view of it. The step is taken
only where it changes nothing another party could see: no event waiting ahead of it, no
handler bound to the raw bytes (EVT_DATA_RECV) or to the state machine's transitions
(EVT_FSM_TRANSITION), and bound to the PDU (EVT_PDU_RECV) only handlers that `install`'s
`pdv_handlers` names, each with a function that does what the handler does with a
P-DATA-TF's event, given the PDU's (context ID, value) pairs: it is called with them, as
pynetdicom's trigger would call the handler (an exception logged, not raised), without a
P_DATA_TF, its items and an Event made for each PDU (the receiver's hashing of each
dataset as it arrives: six PDUs per 530 KB instance); anything else, and every PDU that is
not a well-formed P-DATA-TF, goes pynetdicom's way.

The answer to a C-STORE goes the other way in one step too (`EventDrivenDUL.send_now`,
from dicomnode.fastpath): pynetdicom's association thread puts it on the DUL's queue and
wakes the DUL thread, which takes it off, looks up DT-1 (Sta6 again) and sends it. With one
association the sender waits for each answer, so that wake-up, which on a busy machine
waits for a core, is in every instance's time. Here the association's thread writes the
P-DATA-TF itself when the DUL is in Sta6 with nothing queued ahead of it and nobody bound
to the events such a send would trigger on the DUL's thread (EVT_FSM_TRANSITION,
EVT_PDU_SENT, EVT_DATA_SENT); a lock over every write to the socket (`_send`, the loop's
own A-ABORT, dicomnode.server's `abort_now`) keeps two PDUs from interleaving.

Both loops, and those of the associations the receiver opens itself (C-MOVE
sub-operations, storage commitment reports: `install_requestor`), pause for send_*() with
a handshake that closes a gap in pynetdicom's (`wait_while_paused`): through it the loop
could take a C-STORE sub-operation's response from under the sender.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pynetdicom import evt, fsm
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.utils import make_target

from cloudpacs import dicomsocket, pinning
from cloudpacs.dicomsocket import readable

logger = logging.getLogger("dicomnode")

IDLE_WAIT = 0.05

# The least one recv() of the DUL thread asks for: a PDU of the receiver's default size
# (DICOM_MAX_PDU, 128 KB) with its header and the next one's.
READ_AHEAD = 256 * 1024

# What this module replaces on pynetdicom 3.0.4 (cloudpacs.pinning): the two loops, and
# what `install` relies on to put its own in their place: the DUL provider's constructor
# (its queues, and the thread's target, fixed there to pynetdicom's loop) and the
# association's run_reactor (which starts the DUL thread and calls _run_reactor).
PIN = pinning.Pin(
    "3.0.4",
    (DULServiceProvider.run_reactor, "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803"),
    (Association._run_reactor, "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee"),
    (DULServiceProvider.__init__, "c82dafa9438ddf70685917cb15d2bfbc814aa0ad5233ffb0ae650faedc7570f0"),
    (Association.run_reactor, "ed8bbbe3b3d6ddaee3e8673ba25b2ab2a4c45f25bc1d8ae7b48ebafd09499e6d"),
    (DULServiceProvider._decode_pdu, "fc71dd1bf853e1ce79d29b11731a26a4f6ee9eb697026ad611f8fc91f8aa69c9"),
    # A P-DATA-TF taken straight to the DIMSE provider: the read it replaces, the state
    # machine's step (DT-2) and dispatch it stands in for, and the PDU's items it reads.
    (DULServiceProvider._read_pdu_data, "19f2d4e38c13c83586365d93dd5cd96a0c7c665cb37251054b3e1f246e9f431b"),
    (StateMachine.do_action, "9a883f44c7f31641b7847b97b51a72abdd31a3c8a9d31031cae7f7d929383dd9"),
    (fsm.DT_2, "9ec543394e0b49eb8be2448fc3f9950361b0047db7cf3742844f377bd225ba73"),
    (P_DATA_TF._generate_items, "55a5deea47745b72b787b1115d198e20ba355947da2ccda92987fd372967a141"),
    (P_DATA_TF._wrap_generate_items, "b2ab7ad6fe47ff4acb0a041e8ee9169b6247681618fc3196ca540c89bf17bae6"),
    # A P-DATA-TF's EVT_PDU_RECV handlers called as the trigger calls notification handlers.
    (evt.trigger, "b97f8a75e8affaa01693856a8cbeb7aea6d3b4641cec8ca1975c15b0eea76690"),
    # An answer sent from the association's thread: the step (DT-1) it stands in for and
    # the send it calls.
    (fsm.DT_1, "82e5c5d4114534fa9ac86124c7c7ef11ff2b98bc73069372cbe413af9df19081"),
    (DULServiceProvider._send, "a850a7919e68484ef6751ee7a199b3ba4a911b5cbf0c2928bf796c55539254d4"),
    (DULServiceProvider.send_pdu, "7cbce5da8594124e9e70c790a68df640d21df11af4220783e752bc607de8dde6"),
    otherwise="the receiver uses pynetdicom's polling association loops",
)


class ReadAhead:
    """What was read from a connection and not yet handed over: the chunks recv() returned,
    kept as they came. A read that one chunk holds is handed over as a view of it, without
    a copy: a PDU's header and its body usually arrive in one recv(), and a body is then
    given to the DIMSE provider (its fragments written to the received file, hashed) as
    views of the bytes recv() made. Joining the chunks into one buffer and cutting each
    read out of it copied every received byte twice (docs/benchmarks-ingest.md, run 30);
    now a read that spans chunks is copied once, and one that does not, not at all."""

    __slots__ = ("chunks", "size", "start")

    def __init__(self, data: bytes | bytearray = b"") -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        # Where the first chunk's bytes not handed over yet begin.
        self.start = 0
        self.size = 0
        if data:
            self.add(bytes(data))

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        if not self.chunks:
            return b""
        return b"".join([memoryview(self.chunks[0])[self.start :], *list(self.chunks)[1:]])

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)

    def take(self, nr_bytes: int) -> bytes | memoryview:
        """The next `nr_bytes` (fewer when fewer are held)."""
        nr_bytes = min(nr_bytes, self.size)
        if not nr_bytes:
            return b""
        first = self.chunks[0]
        end = self.start + nr_bytes
        if end <= len(first):
            data: bytes | memoryview = memoryview(first)[self.start : end]
            self.start = end
            if end == len(first):
                self.chunks.popleft()
                self.start = 0
            self.size -= nr_bytes
            return data
        parts: list[memoryview] = []
        wanted = nr_bytes
        while wanted:
            chunk = self.chunks[0]
            piece = memoryview(chunk)[self.start : self.start + wanted]
            parts.append(piece)
            wanted -= len(piece)
            self.start += len(piece)
            if self.start == len(chunk):
                self.chunks.popleft()
                self.start = 0
        self.size -= nr_bytes
        return b"".join(parts)


def read_ahead(sock: Any, pending: ReadAhead, nr_bytes: int) -> bytes | memoryview:
    """`nr_bytes` for pynetdicom: from `pending` (bytes read from the connection earlier,
    not yet handed over), then from `sock`, or fewer when the connection closes first
    (pynetdicom's AssociationSocket.recv contract, bytes-like: a view of what recv()
    returned where one chunk holds them). Each recv() asks for READ_AHEAD bytes at least,
    so that one call usually brings a PDU's header with its body, or several small PDUs;
    what is left over stays in `pending`, which the DUL loop looks at before the socket.
    What one call asks for grows with what arrived, never with what a PDU header claims."""
    while len(pending) < nr_bytes:
        got = len(pending)
        chunk = sock.recv(max(READ_AHEAD, min(nr_bytes - got, got)))
        if not chunk:
            break
        pending.add(chunk)
    return pending.take(nr_bytes)


# What a P-DATA-TF's EVT_PDU_RECV handler does, done from the association and the PDU's
# (presentation context ID, value with its message control header) pairs.
PDVHandler = Callable[[Any, list[tuple[int, memoryview]]], None]

# A P-DATA-TF's PDU type, and its items' header: item length, presentation context ID.
P_DATA_TF_TYPE = 0x04
_PDV_HEADER = struct.Struct(">IB")


def pdv_views(body: bytearray) -> list[tuple[int, memoryview]] | None:
    """The presentation data values of a P-DATA-TF's body (the PDU without its 6-byte
    header) as (context ID, view of the value), the value's message control header
    included, as pynetdicom's P_DATA primitive holds them; None when the body is not a
    list of whole items each holding at least that header (pynetdicom's own decoding then
    finds out what to do)."""
    view = memoryview(body)
    items: list[tuple[int, memoryview]] = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < _PDV_HEADER.size:
            return None
        length, context_id = _PDV_HEADER.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            return None
        items.append((context_id, view[offset + 5 : offset + 4 + length]))
        offset += 4 + length
    return items or None


class _Waker:
    """An eventfd that other threads write to wake the DUL thread's poll(). Closed once,
    under the lock, so a late write never lands on a reused descriptor."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_read(self.fd)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that calls `wake` after each put."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL provider whose idle wait is poll() on the socket and the waker."""

    _waker: _Waker
    _assoc_wake: threading.Event
    # The event-driven loop as the thread's entry point (set by `install`).
    _loop: Callable[[], None]
    # The A-ASSOCIATE-RQ the front door decoded (dicomnode.connections.CheckedAssociateRQ,
    # its bytes in `data`), until the state machine takes it.
    _decoded_rq: Any = None
    # EVT_PDU_RECV handlers, each with what it does with a P-DATA-TF's event done from the
    # PDU's (context ID, value view) pairs: PDVHandler(assoc, items).
    _pdv_handlers: dict[Any, PDVHandler] = {}

    # Held while a PDU is written to the socket, from whichever thread; re-entrant, as the
    # handlers of a sent PDU's events run under it.
    send_lock: threading.RLock

    def _send(self, pdu: Any) -> None:
        with self.send_lock:
            super()._send(pdu)

    def send_now(self, primitive: P_DATA) -> bool:
        """Send a P-DATA from the calling thread, as DT-1 would on the DUL's, when the DUL
        is in Sta6 with nothing queued for it and no handler is bound to what the send
        triggers; False, sending nothing, otherwise (the caller then queues it)."""
        assoc = self.assoc
        if (
            assoc.get_handlers(evt.EVT_FSM_TRANSITION)
            or assoc.get_handlers(evt.EVT_PDU_SENT)
            or assoc.get_handlers(evt.EVT_DATA_SENT)
        ):
            return False
        with self.send_lock:
            if (
                self._kill_thread
                or self.socket is None
                or self.state_machine.current_state != "Sta6"
                or not self.to_provider_queue.empty()
                or not self.event_queue.empty()
            ):
                return False
            super()._send(P_DATA_TF(primitive))
        if not self.event_queue.empty():
            # The send failed (pynetdicom's socket queued Evt17): the loop handles it now.
            self._waker.wake()
        return True

    def _takes_pdata(self) -> bool:
        """Whether a P-DATA-TF read now may go straight to the DIMSE provider: the state
        machine in data transfer with nothing waiting, and nobody to tell otherwise."""
        assoc = self.assoc
        # Notification events: a list of (handler, arguments).
        pdu_handlers: Any = assoc.get_handlers(evt.EVT_PDU_RECV)
        return (
            self.state_machine.current_state == "Sta6"
            and self.event_queue.empty()
            and self._recv_pdu.empty()
            and not assoc.get_handlers(evt.EVT_DATA_RECV)
            and not assoc.get_handlers(evt.EVT_FSM_TRANSITION)
            and all(handler in self._pdv_handlers and not args for handler, args in pdu_handlers)
        )

    def _read_pdu_data(self) -> None:
        """pynetdicom's, the same events for the same bytes, except that a P-DATA-TF the
        association may take at once (`_takes_pdata`) is handed to the DIMSE provider as
        the state machine's DT-2 would, its values views of the one body read."""
        sock: Any = self.socket
        try:
            header = sock.recv(6)
        except (OSError, TimeoutError) as exc:
            logger.error("Connection closed before the entire PDU was received")
            logger.exception(exc)
            self.event_queue.put("Evt17")
            return
        try:
            pdu_type, _, pdu_length = struct.unpack(">BBL", header)
        except struct.error:
            self.event_queue.put("Evt17")
            return
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            logger.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
            self.event_queue.put("Evt19")
            return
        try:
            body = sock.recv(pdu_length)
        except (OSError, TimeoutError) as exc:
            logger.error("Connection closed before the entire PDU was received")
            logger.exception(exc)
            self.event_queue.put("Evt17")
            return
        if len(body) != pdu_length:
            logger.error(
                f"The received PDU is shorter than expected ({6 + len(body)} of {6 + pdu_length} bytes received)"
            )
            self.event_queue.put("Evt17")
            return
        items = pdv_views(body) if pdu_type == P_DATA_TF_TYPE and self._takes_pdata() else None
        if items is not None:
            self._data_transfer(items)
            return
        bytestream = bytearray(header)
        bytestream += body
        try:
            pdu, event = self._decode_pdu(bytestream)
            self.event_queue.put(event)
        except Exception as exc:
            logger.error("Unable to decode the received PDU data")
            logger.exception(exc)
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(pdu)

    def _data_transfer(self, items: list[tuple[int, memoryview]]) -> None:
        """A P-DATA-TF received in Sta6: its EVT_PDU_RECV handlers' work (`_pdv_handlers`),
        then DT-2 (the P-DATA indication to the DIMSE provider; the state stays Sta6),
        failing as the state machine fails an action: logged, the DUL stopped."""
        assoc = self.assoc
        handlers: Any = assoc.get_handlers(evt.EVT_PDU_RECV)
        if handlers:
            # As evt.trigger calls notification handlers: abort() does not wait meanwhile,
            # and the first exception ends the calls, logged.
            assoc.abort = assoc._abort_nonblocking  # type: ignore[method-assign]
            handler = None
            try:
                for handler, _ in handlers:
                    self._pdv_handlers[handler](assoc, items)
            except Exception as exc:
                # pynetdicom's words, in its log.
                name = getattr(handler, "__name__", handler)
                evt.LOGGER.error(f"Exception raised in user's 'evt.EVT_PDU_RECV' event handler '{name}'")
                evt.LOGGER.exception(exc)
            assoc.abort = assoc._abort_blocking  # type: ignore[method-assign]
        primitive = P_DATA()
        primitive._presentation_data_value_list = items  # type: ignore[assignment]
        try:
            assoc.dimse.receive_primitive(primitive)
        except Exception as exc:
            logger.error(
                "State Machine received an exception attempting to perform the action 'DT-2' while in state 'Sta6'"
            )
            logger.exception(exc)
            self.kill_dul()

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        """pynetdicom's, except that the connection's first PDU, decoded at the front door
        already, is not decoded again: the same events with the same PDU, or pynetdicom's
        own decoding of anything else."""
        decoded, self._decoded_rq = self._decoded_rq, None
        if decoded is not None and bytestream == decoded.data:
            evt.trigger(self.assoc, evt.EVT_DATA_RECV, {"data": bytes(bytestream)})
            evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": decoded})
            return decoded, "Evt6"
        return super()._decode_pdu(bytestream)

    def run(self) -> None:
        # Not Thread.run: it calls the target pynetdicom bound to its own polling loop
        # when it made the provider, before `install` changed the class.
        self._loop()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._waker.wake()

    def _idle_wait(self) -> None:
        transport: Any = self.socket
        raw = getattr(transport, "socket", None)
        if raw is None:
            # No connection (yet, or any more): the stock loop's pace.
            time.sleep(0.001)
            return
        if getattr(transport, "aborted", False) or getattr(transport, "prefix", None):
            return
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return
        try:
            found = readable([raw, self._waker.fd], IDLE_WAIT)
        except OSError:
            # A closed socket: the loop's next transport check finds out.
            time.sleep(0.001)
            return
        if self._waker.fd in found:
            self._waker.drain()
        if raw.fileno() in found:
            # The transport check that follows needs no poll() of its own
            # (cloudpacs.dicomsocket.PollingSocket.seen_readable).
            transport.seen_readable = True

    def run_reactor(self) -> None:
        try:
            self._event_loop()
        finally:
            self._waker.close()
            self._assoc_wake.set()

    def _event_loop(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._idle_wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                # As pynetdicom does: an A-ABORT straight on the socket, both loops stopped.
                logger.error("Exception in the DUL loop, aborting the association: %s", exc)
                abort = A_ABORT_RQ()
                abort.source = 0x02
                abort.reason_diagnostic = 0x00
                with contextlib.suppress(Exception), self.send_lock:
                    self.socket.send(abort.encode())  # type: ignore[union-attr]
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False


def wait_while_paused(assoc: Association) -> None:
    """The association loop's pause point, where send_*() and release() stop it before
    they read the DIMSE queue themselves.

    pynetdicom's handshake has a gap: the loop says it is paused, waits on the checkpoint
    and says it is running again, while the sender clears the checkpoint and waits until
    the loop says it is paused. A sender that clears it just after a previous send set it
    (a C-MOVE's C-STORE sub-operations, one after another) finds the loop still saying
    "paused" while its wait has already returned; both then read the queue, and the loop
    may take the sender's C-STORE response ("Received unexpected C-STORE service
    message"): the sender waits its whole DIMSE timeout and aborts (pynetdicom issues
    #435 and #875). Here the loop looks at the checkpoint again after saying it runs: if
    a sender cleared it meanwhile, that sender saw "paused" and is sending, so the loop
    pauses again; if not, a sender clearing it from now on sees "running" and waits."""
    checkpoint = assoc._reactor_checkpoint
    while True:
        assoc._is_paused = True
        checkpoint.wait()
        assoc._is_paused = False
        if checkpoint.is_set():
            return


class CheckedPauseAssociation(Association):
    """pynetdicom's association loop with the pause point of `wait_while_paused`, polling
    as pynetdicom's does: for the associations the receiver opens (C-MOVE sub-operations,
    storage commitment reports), whose DUL thread is already running stock when they can
    be changed."""

    def _idle(self) -> None:
        time.sleep(0.001)

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self._idle()
            wait_while_paused(self)
            if self._turn():
                return

    def _turn(self) -> bool:
        """One turn of the loop after the pause point; True when the association ended."""
        # Every message that arrived, then the rest of pynetdicom's checks.
        while True:
            context_id, message = self.dimse.get_msg(block=False)
            if not message:
                break
            self._serve_request(message, context_id)  # type: ignore[arg-type]
            if self._kill:
                return True
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            logger.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


class EventDrivenAssociation(CheckedPauseAssociation):
    """pynetdicom's acceptor whose loop waits on an event instead of sleeping 1 ms a turn."""

    _wake: threading.Event

    def kill(self) -> None:
        super().kill()
        wake = getattr(self, "_wake", None)
        if wake is not None:
            wake.set()

    def _idle(self) -> None:
        self._wake.wait(IDLE_WAIT)
        self._wake.clear()


def install_requestor(assoc: Association) -> bool:
    """Give an association the receiver requests the checked pause point (its loops stay
    pynetdicom's polling ones) and a socket checked with poll()
    (cloudpacs.dicomsocket.PollingSocket). From its EVT_CONN_OPEN, before the association
    loop starts. Returns False, changing nothing but the socket, on a pynetdicom this was
    not written for."""
    dicomsocket.poll_socket(assoc)
    if not PIN.compatible() or type(assoc) is not Association:
        return False
    assoc.__class__ = CheckedPauseAssociation
    return True


def install(assoc: Association, associate_rq: Any = None, pdv_handlers: Mapping[Any, PDVHandler] | None = None) -> bool:
    """Make a just-created acceptor association (not started) use the event-driven loops;
    `associate_rq`, the front door's decoded A-ASSOCIATE-RQ whose bytes the socket gives
    back first, is taken as it is; `pdv_handlers`, EVT_PDU_RECV handlers (bound without
    arguments) each with a function doing its work on a P-DATA-TF from the PDU's (context
    ID, value) pairs, the values memoryviews (with any other handler bound, P-DATA-TF PDUs
    go through pynetdicom's state machine). Returns False, changing nothing, on a
    pynetdicom these loops were not written for."""
    if not PIN.compatible():
        return False
    dul: Any = assoc.dul
    dul._decoded_rq = associate_rq
    dul._pdv_handlers = dict(pdv_handlers or {})
    dul.send_lock = threading.RLock()
    wake = threading.Event()
    waker = _Waker()
    dul.__class__ = EventDrivenDUL
    # As pynetdicom makes the thread's target: run in a copy of this context when
    # pynetdicom is set to pass context variables to its threads.
    dul._loop = make_target(dul.run_reactor)
    dul._waker = waker
    dul._assoc_wake = wake
    dul.to_provider_queue = _WakingQueue(waker.wake)
    dul.to_user_queue = _WakingQueue(wake.set)
    assoc.dimse.msg_queue = _WakingQueue(wake.set)
    assoc.__class__ = EventDrivenAssociation
    assoc._wake = wake  # type: ignore[attr-defined]
    return True
