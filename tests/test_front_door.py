"""The receiver's front door (dicomnode.connections): no client can starve the consoles.

Idle connections get DICOM_ASSOCIATE_TIMEOUT to send their A-ASSOCIATE-RQ and are never
counted as associations; one address holds at most DICOM_MAX_CONNECTIONS_PER_ADDRESS; the
waiting pool is bounded apart from the associations of registered AE titles, and an
address a registered title came from is let in when it is full; a request pynetdicom
would choke on is aborted at once. Every refusal is logged, rate-limited. Real sockets
and a real pynetdicom server throughout; 127.0.0.2 and up are other loopback addresses."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from cloudpacs.models import Instance
from dicomnode.connections import RefusalLog
from dicomnode.models import AssociationLog
from dicomnode.queryretrieve import OPENED
from tests.factories import make_dataset
from tests.test_dicom_fuzz import associate_rq_body, item, pdu

pytestmark = pytest.mark.django_db(transaction=True)

A_ASSOCIATE_AC = 0x02
A_ABORT = 0x07


def console(calling: str, *, source: str = "127.0.0.1") -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def echo_and_store(address: tuple[str, int], calling: str, *, source: str = "127.0.0.1") -> tuple[int, int, float]:
    """C-ECHO and one C-STORE in one association: their statuses and the seconds taken,
    from connecting to the release."""
    started = time.monotonic()
    assoc = console(calling).associate(*address, ae_title="CLOUDPACS", bind_address=(source, 0), evt_handlers=OPENED)
    assert assoc.is_established, "the console's association was not accepted"
    try:
        echoed = assoc.send_c_echo().Status
        stored = assoc.send_c_store(make_dataset()).Status
    finally:
        assoc.release()
    return echoed, stored, time.monotonic() - started


@contextlib.contextmanager
def idle_connections(address: tuple[str, int], count: int, source: str) -> Iterator[list[socket.socket]]:
    """`count` connections from `source` that never send a byte."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.settimeout(10)
            sock.connect(address)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the receiver closes `sock` (or resets it) within `seconds`."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def rows(**filters: object) -> list[AssociationLog]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = list(AssociationLog.objects.filter(**filters))
        if found:
            return found
        time.sleep(0.1)
    return []


def refusal_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """The receiver's log lines containing `text`, once there is one (they are written
    after the connection is closed, so that the refusal itself waits on nothing)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "dicomnode" and text in r.getMessage()]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_console_echoes_and_stores_at_once_while_another_address_holds_200_idle_connections(
    receiver, ct_modality, settings, caplog
):
    # A deadline far beyond the test, so that an idle connection closed here was refused
    # by the per-address cap, not timed out (on a loaded machine the receiver may take
    # seconds to accept 200 connections, so the refusals are awaited, not sampled).
    settings.DICOM_ASSOCIATE_TIMEOUT = 120.0
    with caplog.at_level(logging.INFO, logger="dicomnode"), idle_connections(receiver, 200, "127.0.0.2") as idle:
        for _ in range(2):  # twice: after a first association too, nothing is used up
            echoed, stored, seconds = echo_and_store(receiver, ct_modality.ae_title)
            assert (echoed, stored) == (0x0000, 0x0000)
            assert seconds < 3, f"the console waited {seconds:.1f} s"
        # Beyond the per-address cap (16 by default) the idle ones were refused; the first
        # 16 are still open.
        deadline = time.monotonic() + 30
        refused = sum(closed_within(sock, max(0.05, deadline - time.monotonic())) for sock in idle[16:])
        assert refused == 200 - 16
        assert not any(closed_within(sock, 0.05) for sock in idle[:16])
    assert Instance.objects.count() == 2
    [line] = refusal_lines(caplog, "connection refused: 16 connections from this address already")
    assert "127.0.0.2" in line
    [row] = rows(reason__contains="DICOM_MAX_CONNECTIONS_PER_ADDRESS")
    assert (row.peer_address, row.outcome) == ("127.0.0.2", AssociationLog.Outcome.REJECTED)


def test_a_connection_that_sends_no_associate_rq_is_closed_at_the_deadline(receiver, ct_modality, settings, caplog):
    settings.DICOM_ASSOCIATE_TIMEOUT = 1.0
    half_a_request = pdu(0x01, associate_rq_body(ct_modality.ae_title))[:40]
    with (
        caplog.at_level(logging.WARNING, logger="dicomnode"),
        idle_connections(receiver, 2, "127.0.0.3") as (
            silent,
            slow,
        ),
    ):
        slow.sendall(half_a_request)
        started = time.monotonic()
        assert closed_within(silent, 10)
        assert closed_within(slow, 10)
        elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 4
    # The same address, the same reason, within a minute: one line (the next one will say
    # how many it stands for).
    [line] = refusal_lines(caplog, "within 1 s of connecting (DICOM_ASSOCIATE_TIMEOUT)")
    assert line.startswith("connection closed: ") and "127.0.0.3" in line
    [row] = rows(reason__contains="DICOM_ASSOCIATE_TIMEOUT")
    assert (row.peer_address, row.calling_ae_title) == ("127.0.0.3", "")
    # A console that sends its request in time is served as ever.
    assert echo_and_store(receiver, ct_modality.ae_title)[:2] == (0x0000, 0x0000)


def test_connections_over_the_per_address_cap_are_refused_at_once_and_the_places_come_back(
    receiver, ct_modality, settings, caplog
):
    settings.DICOM_MAX_CONNECTIONS_PER_ADDRESS = 3
    with caplog.at_level(logging.WARNING, logger="dicomnode"):
        with idle_connections(receiver, 3, "127.0.0.4") as held, idle_connections(receiver, 5, "127.0.0.4") as over:
            assert all(closed_within(sock, 2) for sock in over)
            assert not any(closed_within(sock, 0.2) for sock in held)
            # The cap is per address: the console on another one is not touched by it.
            assert echo_and_store(receiver, ct_modality.ae_title)[:2] == (0x0000, 0x0000)
        # The three closed: their places are free again, for an association too.
        time.sleep(0.3)
        assert echo_and_store(receiver, ct_modality.ae_title, source="127.0.0.4")[:2] == (0x0000, 0x0000)
    lines = refusal_lines(caplog, "connection refused")
    assert len(lines) == 1 and "3 connections from this address already" in lines[0]


def test_the_waiting_pool_is_bounded_and_a_console_s_address_is_let_in_when_it_is_full(
    receiver, ct_modality, settings, caplog
):
    settings.DICOM_MAX_WAITING_CONNECTIONS = 4
    # The console has associated once: its address is known to bring a registered title.
    assert echo_and_store(receiver, ct_modality.ae_title)[:2] == (0x0000, 0x0000)
    with caplog.at_level(logging.WARNING, logger="dicomnode"), contextlib.ExitStack() as stack:
        for n in range(4):  # four strangers, one connection each: the pool is full
            stack.enter_context(idle_connections(receiver, 1, f"127.0.0.{10 + n}"))
        [stranger] = stack.enter_context(idle_connections(receiver, 1, "127.0.0.20"))
        assert closed_within(stranger, 2)
        echoed, stored, seconds = echo_and_store(receiver, ct_modality.ae_title)
        assert (echoed, stored) == (0x0000, 0x0000)
        assert seconds < 3
    [line] = refusal_lines(caplog, "waiting for their A-ASSOCIATE-RQ")
    assert "127.0.0.20" in line and "DICOM_MAX_WAITING_CONNECTIONS" in line


def test_only_registered_titles_take_the_association_places_and_the_last_one_is_refused_transiently(
    receiver, ct_modality, settings, caplog
):
    settings.DICOM_MAX_ASSOCIATIONS = 2
    ae = console(ct_modality.ae_title)
    with idle_connections(receiver, 10, "127.0.0.5"):  # waiting connections take no place
        unknown = console("NOBODY").associate(*receiver, ae_title="CLOUDPACS")
        assert unknown.is_rejected
        first = ae.associate(*receiver, ae_title="CLOUDPACS")
        second = ae.associate(*receiver, ae_title="CLOUDPACS")
        assert first.is_established and second.is_established
        with caplog.at_level(logging.ERROR, logger="pynetdicom"):
            third = ae.associate(*receiver, ae_title="CLOUDPACS")
        assert third.is_rejected
        assert "Result: Rejected Transient" in caplog.text
        assert "Local limit exceeded" in caplog.text
        first.release()
        time.sleep(0.3)
        again = ae.associate(*receiver, ae_title="CLOUDPACS")
        assert again.is_established
        assert again.send_c_echo().Status == 0x0000
        again.release()
        second.release()
    [row] = rows(reason__contains="DICOM_MAX_ASSOCIATIONS")
    assert (row.calling_ae_title, row.outcome) == (ct_modality.ae_title, AssociationLog.Outcome.REJECTED)


def test_an_associate_rq_with_an_even_context_id_is_aborted_at_once(receiver, ct_modality, caplog):
    # Everything right but the ID: pynetdicom's reader thread would raise turning it into
    # its primitive, and the console would wait out the 30 s ACSE timeout.
    contexts = item(
        0x20,
        bytes([2, 0, 0, 0]) + item(0x30, CTImageStorage.encode()) + item(0x40, ExplicitVRLittleEndian.encode()),
    )
    request = pdu(0x01, associate_rq_body(ct_modality.ae_title, contexts=contexts))
    with caplog.at_level(logging.WARNING, logger="dicomnode"), socket.create_connection(receiver, timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(request)
        answer = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(1024):
                answer += chunk
        elapsed = time.monotonic() - started
    assert elapsed < 2
    # A-ABORT from the service provider, reason 6: invalid PDU parameter value (PS3.8 9.3.8).
    assert answer[:1] == bytes([A_ABORT])
    assert struct.unpack(">BBL", answer[:6])[2] == 4
    assert answer[8:10] == bytes([0x02, 0x06])
    [line] = refusal_lines(caplog, "the A-ASSOCIATE-RQ cannot be decoded")
    assert "odd integer" in line
    [row] = rows(reason__contains="cannot be decoded")
    assert row.calling_ae_title == ct_modality.ae_title
    assert echo_and_store(receiver, ct_modality.ae_title)[:2] == (0x0000, 0x0000)


def test_a_first_pdu_that_is_not_an_associate_rq_is_aborted_at_once(receiver, caplog):
    with caplog.at_level(logging.WARNING, logger="dicomnode"), socket.create_connection(receiver, timeout=10) as sock:
        sock.sendall(pdu(0x05, bytes(4)))  # an A-RELEASE-RQ before any association
        answer = sock.recv(1024)
    # A-ABORT from the service provider, reason 2: unexpected PDU.
    assert answer[:1] == bytes([A_ABORT]) and answer[8:10] == bytes([0x02, 0x02])
    assert refusal_lines(caplog, "the first PDU is of type 0x05")


def test_the_refusal_log_is_rate_limited_per_address_and_reason_and_over_all_and_says_what_it_left_out():
    log = RefusalLog(interval=0.3, burst=3)
    assert log.allow(("127.0.0.9", "timeout")) == ""
    assert log.allow(("127.0.0.9", "timeout")) is None
    assert log.allow(("127.0.0.9", "timeout")) is None
    assert log.allow(("127.0.0.9", "per-address")) == ""  # another reason, another line
    assert log.allow(("127.0.0.8", "timeout")) == ""
    assert log.allow(("127.0.0.7", "timeout")) is None  # the fourth line within the interval
    time.sleep(0.35)
    assert log.allow(("127.0.0.9", "timeout")) == (
        "; 2 more like it from this address not logged; 1 refusals from other addresses not logged (over 3 a minute)"
    )
    assert log.allow(("127.0.0.7", "timeout")) == "; 1 more like it from this address not logged"
