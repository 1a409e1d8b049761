"""The event-driven association loops (dicomnode.reactor): pinned to the pynetdicom they
were written against, and used by the receiver's associations."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from typing import Any

import pynetdicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification

from cloudpacs import dicomsocket
from dicomnode import reactor
from dicomnode.queryretrieve import OPENED
from tests.factories import make_dataset

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_is_written_against_the_installed_pynetdicom():
    # Fails on a pynetdicom upgrade: compare the two stock loops with dicomnode.reactor's,
    # and what `install` relies on (the DUL provider's constructor, the association's
    # run_reactor) with how it uses them, then update reactor.PIN.
    assert pynetdicom.__version__ == reactor.PIN.version
    assert reactor.PIN.stock_sources() == reactor.PIN.sources
    assert reactor.PIN.compatible()


def test_its_socket_check_is_written_against_the_installed_pynetdicom():
    # Fails on a pynetdicom upgrade: compare AssociationSocket.ready with
    # cloudpacs.dicomsocket.PollingSocket.ready, then update dicomsocket.SOCKET_PIN.
    assert pynetdicom.__version__ == dicomsocket.SOCKET_PIN.version
    assert dicomsocket.SOCKET_PIN.stock_sources() == dicomsocket.SOCKET_PIN.sources
    assert dicomsocket.SOCKET_PIN.compatible()


def test_it_relies_on_the_internals_it_replaces():
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider

    for name in ("_process_recv_primitive", "_is_transport_event", "kill_dul", "idle_timer_expired"):
        assert callable(getattr(DULServiceProvider, name))
    for name in ("_serve_request", "kill", "_run_reactor"):
        assert callable(getattr(Association, name))
    assert callable(DIMSEServiceProvider.get_msg)
    # The DUL provider is the thread itself: its start() runs its class's run(), which
    # EventDrivenDUL overrides.
    assert issubclass(DULServiceProvider, threading.Thread)


def console_association(receiver: tuple[str, int], calling: str) -> Association:
    """C-ECHO and CT storage, message after message: the client's loop gets the checked
    pause (dicomnode.reactor), or a loaded client can take an answer from under its own
    sender."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae.associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)


def test_the_receivers_loops_wait_on_events_and_never_poll(receiver, ct_modality, monkeypatch):
    """pynetdicom's loops sleep 1 ms whenever they find nothing to do; the receiver's DUL
    thread waits in select() and its association thread on an event. Fails when
    pynetdicom's polling DUL loop runs in place of the event-driven one, as it did while
    only the provider's class was changed: pynetdicom binds the thread's target to its
    own loop when it makes the provider."""
    counting = False
    sleeps: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    sleep = time.sleep
    idle_wait = reactor.EventDrivenDUL._idle_wait

    def counted_sleep(seconds: float) -> None:
        thread = threading.current_thread()
        if counting and isinstance(thread, (reactor.EventDrivenDUL, reactor.EventDrivenAssociation)):
            sleeps[type(thread).__name__] += 1
        sleep(seconds)

    def counted_idle_wait(dul: reactor.EventDrivenDUL) -> None:
        if counting:
            waits["on its own thread" if threading.current_thread() is dul else "elsewhere"] += 1
        idle_wait(dul)

    monkeypatch.setattr(time, "sleep", counted_sleep)
    monkeypatch.setattr(reactor.EventDrivenDUL, "_idle_wait", counted_idle_wait)
    assoc = console_association(receiver, ct_modality.ae_title)
    assert assoc.is_established
    try:
        counting = True
        for _ in range(10):
            assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(make_dataset()).Status == 0x0000
        sleep(0.2)  # idle: pynetdicom's DUL loop would sleep 1 ms at a time throughout
        counting = False
    finally:
        assoc.release()
    assert assoc.is_released
    assert sleeps == {}
    assert waits["on its own thread"] > 0 and waits["elsewhere"] == 0


def test_the_association_request_is_decoded_once_by_the_front_door_and_the_loop(receiver, ct_modality, monkeypatch):
    """The front door decodes the A-ASSOCIATE-RQ and turns it into its primitive to check
    it (dicomnode.connections); the DUL thread takes that, not the same bytes decoded and
    converted again (pydicom UIDs made and validated for every proposed context)."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ

    calls: Counter[str] = Counter()
    decode, to_primitive = A_ASSOCIATE_RQ.decode, A_ASSOCIATE_RQ.to_primitive

    def counted_decode(pdu: A_ASSOCIATE_RQ, bytestream: bytes) -> None:
        calls["decode"] += 1
        decode(pdu, bytestream)

    def counted_to_primitive(pdu: A_ASSOCIATE_RQ) -> object:
        calls["to_primitive"] += 1
        return to_primitive(pdu)

    monkeypatch.setattr(A_ASSOCIATE_RQ, "decode", counted_decode)
    monkeypatch.setattr(A_ASSOCIATE_RQ, "to_primitive", counted_to_primitive)
    assoc = console_association(receiver, ct_modality.ae_title)
    assert assoc.is_established
    try:
        assert [context.abstract_syntax for context in assoc.accepted_contexts] == [Verification, CTImageStorage]
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(make_dataset()).Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released
    assert calls == {"decode": 1, "to_primitive": 1}


def test_the_receivers_associations_use_it_and_answer_at_once(receiver, ct_modality):
    assoc = console_association(receiver, ct_modality.ae_title)
    assert assoc.is_established
    try:
        # The receiver's side of this association runs on the event-driven loop (a DUL is
        # a thread); the client's own, pynetdicom's, is a plain one.
        loops = [thread for thread in threading.enumerate() if isinstance(thread, reactor.EventDrivenDUL)]
        assert len(loops) == 1 and assoc.dul not in loops
        for _ in range(20):
            assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(make_dataset()).Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released
    # How fast it answers is measured by bench/ingest (latency.py, idle_cpu.py), not here;
    # that it never polls, by test_the_receivers_loops_wait_on_events_and_never_poll.


def test_an_idle_association_is_released_promptly(receiver, ct_modality):
    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context(Verification)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    time.sleep(0.3)  # both of the receiver's loops are waiting, not polling
    started = time.perf_counter()
    assoc.release()
    assert assoc.is_released
    assert time.perf_counter() - started < 2.0


class _Loop:
    """What wait_while_paused touches on an association."""

    def __init__(self) -> None:
        self._reactor_checkpoint = threading.Event()
        self._is_paused = False


def test_the_loop_stays_paused_when_a_sender_pauses_it_again_at_once():
    # A C-MOVE's sub-operations: one send_c_store sets the checkpoint and the next clears it
    # before the loop has run. pynetdicom's loop, woken by the set, goes on reading the
    # DIMSE queue while the second sender, which saw it "paused", reads it too.
    loop = _Loop()
    passed = threading.Event()

    def run() -> None:
        reactor.wait_while_paused(loop)  # type: ignore[arg-type]
        passed.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not loop._is_paused and time.monotonic() < deadline:
        time.sleep(0.001)
    assert loop._is_paused
    loop._reactor_checkpoint.set()
    loop._reactor_checkpoint.clear()
    # The loop's wait returned, and it saw the checkpoint cleared again: it pauses again.
    assert not passed.wait(0.3)
    assert loop._is_paused
    loop._reactor_checkpoint.set()
    assert passed.wait(10)
    thread.join(10)


def test_the_associations_the_receiver_opens_get_the_checked_pause(receiver):
    ae = AE(ae_title="ANY")
    ae.add_requested_context(Verification)
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS", evt_handlers=OPENED)
    try:
        assert isinstance(assoc, reactor.CheckedPauseAssociation)
        assert isinstance(assoc, Association)
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()


def test_the_accept_loop_never_forces_a_full_garbage_collection(monkeypatch):
    """pynetdicom's server collects all garbage every 60 turns of its accept loop; a full
    collection holds the GIL while it walks the whole heap (0.6-0.8 s at a load of 30),
    and every association waits. The receiver's server does not."""
    import gc

    from pynetdicom.transport import AssociationServer

    from dicomnode.server import NoDelayAssociationServer, WorkerServer

    collections: list[tuple] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or 0)
    stock = object.__new__(AssociationServer)
    stock._gc = [0, 59]
    for _ in range(61):
        stock.service_actions()
    assert collections, "pynetdicom no longer collects here: this override can go"
    collections.clear()
    for server_class in (NoDelayAssociationServer, WorkerServer):
        server = object.__new__(server_class)
        server._gc = [0, 59]
        for _ in range(200):
            server.service_actions()
    assert collections == []


def test_a_receiver_process_freezes_its_start_up_heap():
    """What start-up loaded is out of the collector's reach once a receiver process has
    warmed up (dicomnode.server.settle_heap): an automatic full collection then walks
    only what was made since."""
    import gc
    import subprocess
    import sys

    code = (
        "import django, gc; django.setup();"
        "from dicomnode.server import settle_heap; before = gc.get_freeze_count(); settle_heap();"
        "print(before, gc.get_freeze_count())"
    )
    env = {**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "cloudpacs.settings"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    before, after = (int(value) for value in out.split())
    assert before == 0 and after > 50_000
    assert gc.get_freeze_count() == 0  # this (test) process is left alone


class _Stream:
    """A socket holding `data`, handing out at most `per_call` bytes a call (what had
    arrived), counting the calls and the most it was asked for at once."""

    def __init__(self, data: bytes, per_call: int | None = None) -> None:
        self.data = bytearray(data)
        self.per_call = per_call
        self.calls = 0
        self.largest = 0

    def recv(self, size: int) -> bytes:
        self.calls += 1
        self.largest = max(self.largest, size)
        count = min(size, len(self.data), self.per_call or size)
        taken = bytes(self.data[:count])
        del self.data[:count]
        return taken


def test_a_pdu_is_read_in_a_few_receives_not_one_per_4_kb():
    """pynetdicom's socket reads 4 KB per recv(), and each recv() gives the interpreter
    lock away and must win it back: with several associations, against the others'
    Python work. The receiver's reads ask for the whole PDU, and more."""
    from pynetdicom.transport import AssociationSocket

    body = bytes(range(256)) * 4096  # 1 MB
    stock = _Stream(body)
    sock = object.__new__(AssociationSocket)
    sock.socket = stock  # type: ignore[assignment]
    assert sock.recv(len(body)) == body
    assert stock.calls == 256

    ours = _Stream(body)
    assert reactor.read_ahead(ours, reactor.ReadAhead(), len(body)) == body
    assert ours.calls <= 3


def test_what_is_read_ahead_is_handed_over_first():
    # Two small PDUs (header, body) that arrived together: one recv() for both.
    first, second = b"\x04\x00\x00\x00\x00\x03abc", b"\x04\x00\x00\x00\x00\x02de"
    stream = _Stream(first + second + b"\x05")
    pending = reactor.ReadAhead()
    read = [bytes(reactor.read_ahead(stream, pending, size)) for size in (6, 3, 6, 2)]
    assert read == [first[:6], b"abc", second[:6], b"de"]
    assert stream.calls == 1
    # The next PDU's first byte is kept for the next read (the DUL loop looks at it
    # before it waits on the socket).
    assert bytes(pending) == b"\x05"


def test_a_pdu_that_arrives_in_pieces_is_read_whole():
    body = bytes(range(256)) * 1000
    pieces = _Stream(body[6:], per_call=1500)
    pending = reactor.ReadAhead(body[:6])
    assert reactor.read_ahead(pieces, pending, len(body)) == body
    assert pieces.data == b""
    assert bytes(pending) == b""


def test_a_pdu_that_one_receive_brought_is_handed_over_without_a_copy():
    # A header and its body in one recv(), with the next PDU's first bytes: the body is a
    # view of what recv() returned; the rest waits, still uncopied, for the next read.
    body = bytes(range(256)) * 512
    arrived = b"\x04\x00" + len(body).to_bytes(4, "big") + body + b"\x04\x00\x00"
    stream = _Stream(arrived)
    pending = reactor.ReadAhead()
    header = reactor.read_ahead(stream, pending, 6)
    read = reactor.read_ahead(stream, pending, len(body))
    assert (bytes(header), read) == (arrived[:6], body)
    assert isinstance(read, memoryview) and read.obj is pending.chunks[0]
    assert stream.calls == 1
    assert bytes(pending) == b"\x04\x00\x00"
    # A read across two receives is joined once.
    stream.data += b"\x00\x00\x02de"
    assert bytes(reactor.read_ahead(stream, pending, 6)) == b"\x04\x00\x00\x00\x00\x02"
    assert bytes(reactor.read_ahead(stream, pending, 2)) == b"de"
    assert len(pending) == 0


def test_a_pdu_header_claiming_more_than_arrives_costs_only_what_arrived():
    # A peer announcing 60 MB and sending 10 bytes before closing: what is asked for
    # follows what arrived; the short read is pynetdicom's sign of a closed connection.
    short = _Stream(b"0123456789")
    pending = reactor.ReadAhead()
    assert reactor.read_ahead(short, pending, 60 * 1024 * 1024) == b"0123456789"
    assert short.largest <= reactor.READ_AHEAD
    assert bytes(pending) == b""


def test_the_receivers_socket_reads_a_large_instance_in_few_receives(receiver, ct_modality, monkeypatch):
    from dicomnode import server

    calls: list[int] = []

    class Counting:
        def __init__(self, sock) -> None:  # type: ignore[no-untyped-def]
            self.sock = sock

        def recv(self, size: int) -> bytes:
            calls.append(size)
            return bytes(self.sock.recv(size))

    recv = server.CappedAssociationSocket.recv

    def counting(self, nr_bytes: int) -> bytearray:  # type: ignore[no-untyped-def]
        real = self.socket
        self.socket = Counting(real)
        try:
            return recv(self, nr_bytes)
        finally:
            self.socket = real

    monkeypatch.setattr(server.CappedAssociationSocket, "recv", counting)
    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        ds = make_dataset(rows=1024, columns=1024)  # 2 MB of pixel data
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    # 2 MB in 128 KB PDUs in far fewer recv() calls than pynetdicom's 4 KB reads (512),
    # each asking for at least READ_AHEAD.
    assert 0 < len(calls) < 200
    assert min(calls) >= reactor.READ_AHEAD


def test_a_pdu_the_loop_waited_for_is_read_without_asking_poll_again(receiver, ct_modality, monkeypatch):
    """The DUL thread waits in poll() on its socket and its waker; when that poll found
    the socket readable, the transport check that follows does not poll it again."""
    calls: list[tuple[int, bool]] = []  # (descriptors asked about, whether the socket was found)
    readable = dicomsocket.readable

    def counted(fds: list[Any], timeout: float) -> set[int]:
        found = readable(fds, timeout)
        if isinstance(threading.current_thread(), reactor.EventDrivenDUL):
            first = fds[0] if isinstance(fds[0], int) else fds[0].fileno()
            calls.append((len(fds), first in found))
        return found

    monkeypatch.setattr(dicomsocket, "readable", counted)
    monkeypatch.setattr(reactor, "readable", counted)
    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        for _ in range(3):
            assert assoc.send_c_store(make_dataset(rows=512, columns=512)).Status == 0x0000
    finally:
        assoc.release()
    # A wait (the socket and the waker) that found the socket, then a check of the socket
    # alone: on main after each such wait, one per PDU the loop waited for.
    found = [index for index, (fds, socket_found) in enumerate(calls) if fds == 2 and socket_found]
    assert len(found) >= 3
    assert [index for index in found if calls[index + 1 : index + 2] == [(1, True)]] == []


def _pdata_tf_body(*items: tuple[int, bytes]) -> bytes:
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, data] for context_id, data in items]
    return bytes(P_DATA_TF(primitive).encode()[6:])


def test_a_data_pdus_values_are_read_as_pynetdicom_reads_them():
    from pynetdicom.pdu import P_DATA_TF

    items = [(1, b"\x03" + b"command"), (3, b"\x02" + bytes(range(256)) * 40)]
    body = _pdata_tf_body(*items)
    stock = P_DATA_TF()
    stock.decode(b"\x04\x00" + len(body).to_bytes(4, "big") + body)
    views = reactor.pdv_views(bytearray(body))
    assert views is not None
    expected = stock.to_primitive().presentation_data_value_list
    assert [(context_id, bytes(data)) for context_id, data in views] == expected
    assert all(isinstance(data, memoryview) for _, data in views)


def test_a_malformed_data_pdu_is_left_to_pynetdicom():
    whole = _pdata_tf_body((1, b"\x02abc"))
    assert reactor.pdv_views(bytearray()) is None
    assert reactor.pdv_views(bytearray(whole[:-1])) is None  # an item longer than the PDU
    assert reactor.pdv_views(bytearray(whole + b"\x00\x00")) is None  # a piece of an item header
    assert reactor.pdv_views(bytearray(_pdata_tf_body((1, b"")))) is None  # no message control header


def _receiving_association(assoc: Any) -> reactor.EventDrivenAssociation:
    """The receiver's thread serving the requestor's `assoc`, found by its peer's port: an
    earlier test's association thread may still be ending beside it."""
    port = assoc.dul.socket.socket.getsockname()[1]
    (receiving,) = [
        thread
        for thread in threading.enumerate()
        if isinstance(thread, reactor.EventDrivenAssociation)
        and thread.dul.socket is not None
        and thread.dul.socket.socket is not None
        and thread.dul.socket.socket.getpeername()[1] == port
    ]
    return receiving


def _receiving_side_events(monkeypatch) -> Counter[str]:  # type: ignore[no-untyped-def]
    """The events the receiver's state machines act on, counted (the client's are not)."""
    from pynetdicom.fsm import StateMachine

    events: Counter[str] = Counter()
    do_action = StateMachine.do_action

    def counted(machine: StateMachine, event: str) -> None:
        if isinstance(machine.dul, reactor.EventDrivenDUL):
            events[event] += 1
        do_action(machine, event)

    monkeypatch.setattr(StateMachine, "do_action", counted)
    return events


def _stored_dataset_bytes(sop_instance_uid: str) -> bytes:
    from cloudpacs import storage
    from cloudpacs.models import Instance

    instance = Instance.objects.get(sop_instance_uid=sop_instance_uid)
    with storage.open_key(instance.storage_key) as stream:
        data = stream.read()
    meta_length = int.from_bytes(data[140:144], "little")
    return data[144 + meta_length :]


def _encoded(ds) -> bytes:  # type: ignore[no-untyped-def]
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_a_data_pdu_goes_to_the_dimse_provider_without_the_state_machines_queues(receiver, ct_modality, monkeypatch):
    """pynetdicom queues each P-DATA-TF's event and PDU and takes them off again to look up
    DT-2 in its transition table, copying the PDU's bytes five times on the way; the
    receiver hands its fragments over at once, as views of the one read."""
    from pynetdicom.pdu import P_DATA_TF

    from cloudpacs.models import Instance

    events = _receiving_side_events(monkeypatch)
    decoded: Counter[str] = Counter()
    decode = P_DATA_TF.decode

    def counted_decode(pdu: P_DATA_TF, bytestream: bytes) -> None:
        if isinstance(threading.current_thread(), reactor.EventDrivenDUL):
            decoded["P-DATA-TF"] += 1
        decode(pdu, bytestream)

    monkeypatch.setattr(P_DATA_TF, "decode", counted_decode)
    ds = _store_large_instance(receiver, ct_modality.ae_title)
    assert events["Evt10"] == 0 and decoded == {}
    # The association's other steps still go through the state machine; the answer was
    # sent from the association's thread (test_a_c_store_answer_is_sent_...).
    assert events["Evt6"] == 1 and events["Evt12"] == 1
    stored = _stored_dataset_bytes(ds.SOPInstanceUID)
    assert stored == _encoded(ds)
    # Hashed while received (dicomnode.server.hash_pdvs), from the views.
    assert Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID).sha256 == hashlib.sha256(stored).hexdigest()


def _receiving_pdu_events(monkeypatch) -> Counter[str]:  # type: ignore[no-untyped-def]
    """The P-DATA-TF objects, and the EVT_PDU_RECV events of one, the receiver's DUL threads make."""
    from pynetdicom import evt
    from pynetdicom.pdu import P_DATA_TF

    made: Counter[str] = Counter()
    init, event_init = P_DATA_TF.__init__, evt.Event.__init__

    def counted_init(pdu: P_DATA_TF, *args: Any) -> None:
        if isinstance(threading.current_thread(), reactor.EventDrivenDUL):
            made["P-DATA-TF"] += 1
        init(pdu, *args)

    def counted_event(event: evt.Event, assoc: Any, kind: Any, attrs: Any = None) -> None:
        pdu = (attrs or {}).get("pdu")
        if isinstance(pdu, P_DATA_TF) and isinstance(threading.current_thread(), reactor.EventDrivenDUL):
            made["EVT_PDU_RECV"] += 1
        event_init(event, assoc, kind, attrs)

    monkeypatch.setattr(P_DATA_TF, "__init__", counted_init)
    monkeypatch.setattr(evt.Event, "__init__", counted_event)
    return made


def _store_large_instance(receiver: tuple[str, int], calling: str) -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    ds = make_dataset(rows=512, columns=512)  # 512 KB of pixel data: several 128 KB PDUs
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released
    return ds


def test_a_data_pdus_values_are_hashed_without_a_pdu_or_an_event_made(receiver, ct_modality, monkeypatch):
    """The receiver's only handler of received PDUs hashes each dataset as it arrives: it is
    called with the PDU's values (dicomnode.server.hash_pdvs), no P_DATA_TF, items and
    Event made for each of the instance's PDUs (before: one of each per PDU)."""
    from cloudpacs.models import Instance

    made = _receiving_pdu_events(monkeypatch)
    ds = _store_large_instance(receiver, ct_modality.ae_title)
    assert made == {}
    stored = _stored_dataset_bytes(ds.SOPInstanceUID)
    assert stored == _encoded(ds)
    assert Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID).sha256 == hashlib.sha256(stored).hexdigest()


def test_an_exception_in_a_data_pdus_handler_is_logged_as_pynetdicom_logs_it(
    receiver, ct_modality, monkeypatch, caplog
):
    from dicomnode import server

    calls: list[int] = []

    def failing(assoc: Any, items: Any) -> None:
        calls.append(len(items))
        raise RuntimeError("no hashing today")

    monkeypatch.setitem(server.PDV_HANDLERS, server.handle_pdu, failing)
    with caplog.at_level("ERROR", logger="pynetdicom.events"):
        ds = _store_large_instance(receiver, ct_modality.ae_title)
    assert len(calls) >= 5
    assert "Exception raised in user's 'evt.EVT_PDU_RECV' event handler 'handle_pdu'" in caplog.text
    assert "no hashing today" in caplog.text
    # Stored all the same, hashed from the file.
    assert _stored_dataset_bytes(ds.SOPInstanceUID) == _encoded(ds)


def test_with_another_handler_on_the_pdus_they_take_pynetdicoms_way(receiver, ct_modality, monkeypatch):
    """A handler the receiver did not write may keep a PDU's values or expect bytes: with
    one bound, every P-DATA-TF is decoded and queued by pynetdicom as before."""
    from pynetdicom import evt

    events = _receiving_side_events(monkeypatch)
    seen: list[type] = []

    def foreign(event: evt.Event) -> None:
        for item in getattr(event.pdu, "presentation_data_value_items", []):  # type: ignore[attr-defined]
            seen.append(type(item.presentation_data_value))

    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    ds = make_dataset(rows=512, columns=512)
    try:
        receiving = _receiving_association(assoc)
        receiving.bind(evt.EVT_PDU_RECV, foreign)
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert events["Evt10"] >= 5
    assert seen and set(seen) == {bytes}
    assert _stored_dataset_bytes(ds.SOPInstanceUID) == _encoded(ds)


def test_a_c_store_answer_is_sent_from_the_association_thread(receiver, ct_modality, monkeypatch):
    """pynetdicom queues each answer for the DUL thread, wakes it, and the DUL looks DT-1
    up and sends it: a wake-up in every instance's time. The receiver's association
    thread writes a C-STORE's answer itself; a C-ECHO's still goes through the queue."""
    events = _receiving_side_events(monkeypatch)
    from pynetdicom.dul import DULServiceProvider

    senders: Counter[str] = Counter()
    send = DULServiceProvider._send

    def counted_send(dul: DULServiceProvider, pdu: object) -> None:
        if isinstance(dul, reactor.EventDrivenDUL):
            senders[type(threading.current_thread()).__name__] += 1
        send(dul, pdu)

    monkeypatch.setattr(DULServiceProvider, "_send", counted_send)
    assoc = console_association(receiver, ct_modality.ae_title)
    assert assoc.is_established
    try:
        for _ in range(3):
            assert assoc.send_c_store(make_dataset()).Status == 0x0000
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released
    assert events["Evt9"] == 1  # the C-ECHO's answer
    # A-ASSOCIATE-AC, the C-ECHO's answer, A-RELEASE-RP on the DUL's thread.
    assert senders == {"EventDrivenDUL": 3, "EventDrivenAssociation": 3}


def test_with_a_handler_on_sent_pdus_answers_take_pynetdicoms_way(receiver, ct_modality, monkeypatch):
    from pynetdicom import evt

    events = _receiving_side_events(monkeypatch)
    sent: list[str] = []
    ae = AE(ae_title=ct_modality.ae_title)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*receiver, ae_title="CLOUDPACS")
    assert assoc.is_established
    try:
        receiving = _receiving_association(assoc)
        receiving.bind(evt.EVT_PDU_SENT, lambda event: sent.append(threading.current_thread().name))
        for _ in range(2):
            assert assoc.send_c_store(make_dataset()).Status == 0x0000
    finally:
        assoc.release()
    assert events["Evt9"] == 2
    assert len(sent) >= 2 and set(sent) == {receiving.dul.name}
