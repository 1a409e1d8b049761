"""The PROXY protocol v2 from trusted proxies only (DICOM_PROXY_ADDRESSES): behind HAProxy
in TCP mode the receiver sees the proxy's address, so the proxy names the peer in a header
before the DICOM bytes; the limits per address, DICOM_CHECK_PEER_ADDRESS and the
association log then see that peer. A header from any other address is refused, and a
trusted proxy's connection without one too. 127.0.0.2 and up are other loopback
addresses; a small relay in the test plays the proxy, and a real haproxy when installed."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from dicomnode.connections import PROXY_V2_SIGNATURE
from dicomnode.models import AssociationLog
from tests.factories import make_dataset

pytestmark = pytest.mark.django_db(transaction=True)

PROXY = "127.0.0.5"
STRANGER = "127.0.0.6"


def proxy_header(peer: tuple[str, int], target: tuple[str, int], *, local: bool = False) -> bytes:
    """A PROXY protocol v2 header over TCP/IPv4, as HAProxy's send-proxy-v2 writes it."""
    command = 0x20 if local else 0x21
    body = (
        ipaddress.IPv4Address(peer[0]).packed
        + ipaddress.IPv4Address(target[0]).packed
        + struct.pack(">HH", peer[1], target[1])
    )
    return PROXY_V2_SIGNATURE + bytes([command, 0x11]) + struct.pack(">H", len(body)) + body


@contextlib.contextmanager
def relay(target: tuple[str, int], source: str, peer: tuple[str, int]) -> Iterator[tuple[str, int]]:
    """A one-connection-at-a-time TCP proxy: each client's connection is forwarded to
    `target` from `source`, after a PROXY header naming `peer`."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target, source_address=(source, 0))
            upstream.sendall(proxy_header(peer, target))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        thread.join()
        listener.close()


def console(calling: str) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae


def closed_by_receiver(sock: socket.socket, seconds: float = 5.0) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.fixture
def trusted(settings) -> None:
    settings.DICOM_PROXY_ADDRESSES = (ipaddress.ip_network(PROXY),)


def test_a_trusted_proxy_names_the_peer_for_the_address_check_and_the_log(trusted, settings, receiver, ct_modality):
    settings.DICOM_CHECK_PEER_ADDRESS = True
    ct_modality.host = "10.20.30.40"
    ct_modality.save()
    with relay(receiver, PROXY, ("10.20.30.40", 40000)) as front:
        assoc = console(ct_modality.ae_title).associate(*front, ae_title="CLOUDPACS")
        assert assoc.is_established
        assert assoc.send_c_store(make_dataset()).Status == 0x0000
        assoc.release()
    deadline = time.monotonic() + 5
    while not AssociationLog.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    row = AssociationLog.objects.get()
    assert (row.peer_address, row.peer_port, row.instances_stored) == ("10.20.30.40", 40000, 1)


def test_the_address_check_refuses_another_named_peer(trusted, settings, receiver, ct_modality):
    settings.DICOM_CHECK_PEER_ADDRESS = True
    ct_modality.host = "10.20.30.41"
    ct_modality.save()
    with relay(receiver, PROXY, ("10.20.30.40", 40000)) as front:
        assoc = console(ct_modality.ae_title).associate(*front, ae_title="CLOUDPACS")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 0x03


def test_a_proxy_header_from_an_untrusted_address_is_refused(trusted, receiver, ct_modality):
    with relay(receiver, STRANGER, ("10.20.30.40", 40000)) as front:
        assoc = console(ct_modality.ae_title).associate(*front, ae_title="CLOUDPACS")
        assert not assoc.is_established
    deadline = time.monotonic() + 5
    while not AssociationLog.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    row = AssociationLog.objects.get()
    assert row.peer_address == STRANGER
    assert "not a trusted proxy" in row.reason


def test_without_any_trusted_proxy_a_proxy_header_is_refused(receiver, ct_modality):
    with socket.create_connection(receiver, source_address=("127.0.0.1", 0)) as sock:
        sock.sendall(proxy_header(("10.20.30.40", 40000), receiver))
        assert closed_by_receiver(sock)


def test_a_trusted_proxys_connection_without_a_header_is_refused(trusted, receiver, ct_modality):
    assoc = console(ct_modality.ae_title).associate(*receiver, ae_title="CLOUDPACS", bind_address=(PROXY, 0))
    assert not assoc.is_established
    deadline = time.monotonic() + 5
    while not AssociationLog.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "without a PROXY protocol v2 header" in AssociationLog.objects.get().reason


def test_the_limit_per_address_counts_the_named_peers(trusted, settings, receiver, ct_modality):
    settings.DICOM_MAX_CONNECTIONS_PER_ADDRESS = 2
    settings.DICOM_ASSOCIATE_TIMEOUT = 20
    held = []
    try:
        for _ in range(2):
            sock = socket.create_connection(receiver, source_address=(PROXY, 0))
            sock.sendall(proxy_header(("10.0.0.1", 5000), receiver))
            held.append(sock)
        time.sleep(0.3)
        third = socket.create_connection(receiver, source_address=(PROXY, 0))
        held.append(third)
        third.sendall(proxy_header(("10.0.0.1", 5001), receiver))
        assert closed_by_receiver(third)
        # Another peer behind the same proxy is let in.
        with relay(receiver, PROXY, ("10.0.0.2", 5000)) as front:
            assoc = console(ct_modality.ae_title).associate(*front, ae_title="CLOUDPACS")
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
    finally:
        for sock in held:
            sock.close()
    assert AssociationLog.objects.filter(peer_address="10.0.0.1", reason__contains="DICOM_MAX_CONNECTIONS").exists()


def test_a_local_header_is_the_proxys_own_connection(trusted, receiver, ct_modality):
    # HAProxy's health checks (check-send-proxy) send LOCAL and close.
    with socket.create_connection(receiver, source_address=(PROXY, 0)) as sock:
        sock.sendall(proxy_header(("127.0.0.5", 0), receiver, local=True))
    with relay(receiver, PROXY, ("10.0.0.3", 5000)) as front:
        assoc = console(ct_modality.ae_title).associate(*front, ae_title="CLOUDPACS")
        assert assoc.is_established
        assoc.release()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (Debian package haproxy)")
def test_behind_a_real_haproxy_in_tcp_mode(settings, receiver, ct_modality, tmp_path: Path):
    settings.DICOM_PROXY_ADDRESSES = (ipaddress.ip_network("127.0.0.1"),)
    settings.DICOM_CHECK_PEER_ADDRESS = True
    ct_modality.host = "127.0.0.7"
    ct_modality.save()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        front_port = probe.getsockname()[1]
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
        f"frontend dicom\n  bind 127.0.0.1:{front_port}\n  default_backend receivers\n"
        f"backend receivers\n  server node1 {receiver[0]}:{receiver[1]} send-proxy-v2\n"
    )
    process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", front_port)) == 0:
                    break
            time.sleep(0.1)
        assoc = console(ct_modality.ae_title).associate(
            "127.0.0.1", front_port, ae_title="CLOUDPACS", bind_address=("127.0.0.7", 0)
        )
        assert assoc.is_established
        assert assoc.send_c_store(make_dataset()).Status == 0x0000
        assoc.release()
        # From another address the modality's registered host does not match.
        other = console(ct_modality.ae_title).associate(
            "127.0.0.1", front_port, ae_title="CLOUDPACS", bind_address=("127.0.0.8", 0)
        )
        assert other.is_rejected
    finally:
        process.terminate()
        process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while AssociationLog.objects.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(AssociationLog.objects.values_list("peer_address", "outcome")) == {
        ("127.0.0.7", AssociationLog.Outcome.RELEASED),
        ("127.0.0.8", AssociationLog.Outcome.REJECTED),
    }
