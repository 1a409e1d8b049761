"""The receiver's front door: which connections it takes, and for how long it waits.

A connection is held in two pools, counted apart:

- waiting: connected, its A-ASSOCIATE-RQ not yet complete. It gets
  DICOM_ASSOCIATE_TIMEOUT seconds (TLS handshake included) to send the whole request, and
  is read on its own thread before pynetdicom sees it, so it holds no association.
  At most DICOM_MAX_WAITING_CONNECTIONS wait at once from addresses that have not yet
  brought a registered AE title; an address that has is never refused for this pool
  being full (its consoles keep their way in while strangers fill it).
- associated: an association of a registered AE title, at most DICOM_MAX_ASSOCIATIONS.
  A request from an unregistered title is rejected at once and never takes a place.

Over both, DICOM_MAX_CONNECTIONS_PER_ADDRESS bounds what one peer address may hold.

Every connection refused or closed for these reasons is logged, rate-limited per peer
address and reason (one line, and one association log row, a minute; the next line says
how many were not logged), so a flood of connections cannot flood the log or its table.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import ssl
import struct
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RQ

from dicomnode.models import AssociationLog

logger = logging.getLogger("dicomnode")

# PDU types (PS3.8 9.3.1): only an A-ASSOCIATE-RQ may open a connection.
ASSOCIATE_RQ = 0x01
# A-ABORT source and reason (PS3.8 Table 9-26).
ABORT_SOURCE_PROVIDER = 0x02
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06
# An A-ASSOCIATE-RQ is a few kilobytes even with every context a console proposes.
ASSOCIATE_RQ_CEILING = 1024 * 1024

LOG_INTERVAL = 60.0
# Lines (and rows) a minute over all peers, when many addresses are refused at once.
LOG_BURST = 30
# Addresses remembered as having brought a registered AE title.
KNOWN_ADDRESSES = 4096


class Refused(Exception):
    """A connection that will not become an association; the message says why."""

    def __init__(self, kind: str, why: str, *, abort_reason: int | None = None, calling: str = "") -> None:
        super().__init__(why)
        self.kind = kind
        self.why = why
        self.abort_reason = abort_reason
        self.calling = calling


@dataclass
class Limits:
    associate_timeout: float
    max_associations: int
    max_waiting: int
    max_per_address: int


class Admission:
    """The counts behind the limits, shared by the accept loop and every connection's
    threads, under one lock."""

    def __init__(self, limits: Callable[[], Limits]) -> None:
        # Read at each use, like the receiver's other settings.
        self._limits = limits
        self._lock = threading.Lock()
        self._by_address: Counter[str] = Counter()
        self._waiting: Counter[str] = Counter()
        self._waiting_total = 0
        self._associations = 0
        self._known: OrderedDict[str, float] = OrderedDict()

    @property
    def limits(self) -> Limits:
        return self._limits()

    def admit(self, address: str, *, proxied: bool = False) -> Refused | None:
        """Take a just-accepted connection into the waiting pool, or say why not. A
        connection from a trusted proxy (`proxied`) is never refused here: it is counted
        under the proxy's key until its PROXY header names the peer (`readdress`)."""
        limits = self.limits
        with self._lock:
            if proxied:
                self._take(address)
                return None
            return self._admit(address, limits)

    def readdress(self, proxy_key: str, address: str) -> Refused | None:
        """A proxied connection's PROXY header named its peer: it leaves the proxy's count
        and is admitted as the peer's, or refused (and then counted nowhere)."""
        limits = self.limits
        with self._lock:
            self._leave_waiting(proxy_key)
            self._release(proxy_key)
            return self._admit(address, limits)

    def _take(self, address: str) -> None:
        self._by_address[address] += 1
        self._waiting[address] += 1
        self._waiting_total += 1

    def _release(self, address: str) -> None:
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def _admit(self, address: str, limits: Limits) -> Refused | None:
        if self._by_address[address] >= limits.max_per_address:
            return Refused(
                "per-address",
                f"{self._by_address[address]} connections from this address already,"
                f" the limit is {limits.max_per_address} (DICOM_MAX_CONNECTIONS_PER_ADDRESS)",
            )
        if self._waiting_total >= limits.max_waiting and address not in self._known:
            return Refused(
                "waiting-pool",
                f"{self._waiting_total} connections are waiting for their A-ASSOCIATE-RQ,"
                f" the limit is {limits.max_waiting} (DICOM_MAX_WAITING_CONNECTIONS)",
            )
        self._take(address)
        return None

    def request_complete(self, address: str) -> None:
        """The connection's A-ASSOCIATE-RQ arrived: it leaves the waiting pool."""
        with self._lock:
            self._leave_waiting(address)

    def closed(self, address: str, *, waiting: bool) -> None:
        with self._lock:
            if waiting:
                self._leave_waiting(address)
            self._release(address)

    def _leave_waiting(self, address: str) -> None:
        self._waiting[address] -= 1
        if self._waiting[address] <= 0:
            del self._waiting[address]
        self._waiting_total -= 1

    def take_association(self, address: str) -> bool:
        """A place for a registered AE title's association; False when all are taken.
        The address is remembered as a console's."""
        with self._lock:
            self._known[address] = time.monotonic()
            self._known.move_to_end(address)
            while len(self._known) > KNOWN_ADDRESSES:
                self._known.popitem(last=False)
            if self._associations >= self._limits().max_associations:
                return False
            self._associations += 1
            return True

    def give_back_association(self) -> None:
        with self._lock:
            self._associations -= 1

    @property
    def associations(self) -> int:
        return self._associations

    @property
    def waiting(self) -> int:
        return self._waiting_total


class RefusalLog:
    """Logs refusals, at most one line (and one association log row) a minute for each peer
    address and reason, and LOG_BURST a minute over all of them."""

    def __init__(self, interval: float = LOG_INTERVAL, burst: int = LOG_BURST) -> None:
        self.interval = interval
        self.burst = burst
        self._lock = threading.Lock()
        self._last: dict[tuple[str, ...], float] = {}
        self._suppressed: Counter[tuple[str, ...]] = Counter()
        self._window_start = time.monotonic()
        self._window_count = 0
        self._dropped = 0

    def allow(self, key: tuple[str, ...]) -> str | None:
        """None when a line for `key` is over the rate (it is counted); otherwise what to
        add to the line: how many like it, and how many others, were not logged since."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] += 1
                return None
            if now - self._window_start >= self.interval:
                self._window_start, self._window_count = now, 0
            if self._window_count >= self.burst:
                self._dropped += 1
                if len(self._suppressed) < 4 * KNOWN_ADDRESSES:  # bounded, whatever the keys
                    self._suppressed[key] += 1
                return None
            self._window_count += 1
            self._last[key] = now
            if len(self._last) > 4 * KNOWN_ADDRESSES:
                self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
                self._suppressed = Counter({k: n for k, n in self._suppressed.items() if k in self._last})
            suppressed = self._suppressed.pop(key, 0)
            dropped, self._dropped = self._dropped, 0
        extra = ""
        if suppressed:
            extra += f"; {suppressed} more like it from this address not logged"
        if dropped:
            extra += f"; {dropped} refusals from other addresses not logged (over {self.burst} a minute)"
        return extra

    def record(
        self,
        address: str | None,
        port: int | None,
        refused: Refused,
        *,
        tls: bool = False,
        write_row_here: bool = True,
    ) -> bool:
        """Log this refusal, and write its row, unless it is over the rate; returns whether
        it was logged. The row is written on this thread, or with write_row_here=False (the
        accept loop, which must not wait on the database) on a short-lived one."""
        extra = self.allow((address or "?", refused.kind))
        if extra is None:
            return False
        why = refused.why + extra
        logger.warning("connection %s: %s (peer %s:%s)", _verb(refused.kind), why, address, port)
        if write_row_here:
            write_refusal_row(address, port, refused, why, tls)
        else:
            threading.Thread(
                target=write_refusal_row, args=(address, port, refused, why, tls), name="refusal-log", daemon=True
            ).start()
        return True


def _verb(kind: str) -> str:
    return "refused" if kind in {"per-address", "waiting-pool"} else "closed"


def write_refusal_row(address: str | None, port: int | None, refused: Refused, why: str, tls: bool) -> None:
    """One association log row for a connection that never became an association. Never
    raises: the log must not keep a connection open."""
    try:
        close_old_connections()
        AssociationLog.objects.create(
            calling_ae_title=refused.calling[:16],
            called_ae_title="",
            peer_address=address,
            peer_port=port,
            outcome=AssociationLog.Outcome.REJECTED,
            reason=why[:255],
            tls=tls,
            ended_at=timezone.now(),
        )
    except Exception:
        logger.exception("could not write the association log for %s", address)
    finally:
        connection.close()


# PROXY protocol version 2 (HAProxy's proxy-protocol.txt, section 2.2): a 12-byte
# signature, version and command, address family and protocol, the length of the rest.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_COMMAND_LOCAL = 0x0
PROXY_COMMAND_PROXY = 0x1
PROXY_TCP4 = 0x11
PROXY_TCP6 = 0x21
# The addresses and a few TLVs: HAProxy sends far less than this.
PROXY_HEADER_CEILING = 4096


def trusted_proxy(address: str, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not proxies:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def read_proxy_header(sock: socket.socket, deadline: float, timeout: float) -> tuple[str, int] | None:
    """The peer (address, port) that a trusted proxy's PROXY v2 header names, read before
    `deadline`; None for a LOCAL header (the proxy's own connection: a health check).
    Raises Refused when the connection does not start with a valid v2 header: a trusted
    proxy always sends one, so anything else is not from it."""
    head = _read(sock, 16, deadline, timeout)
    if head[:12] != PROXY_V2_SIGNATURE:
        raise Refused("proxy-header", "a connection from a trusted proxy without a PROXY protocol v2 header")
    version_command, family, length = head[12], head[13], struct.unpack(">H", head[14:16])[0]
    if version_command >> 4 != 2:
        raise Refused("proxy-header", f"PROXY protocol version {version_command >> 4}, not 2")
    if length > PROXY_HEADER_CEILING:
        raise Refused("proxy-header", f"a PROXY header of {length} bytes")
    body = _read(sock, length, deadline, timeout) if length else b""
    command = version_command & 0x0F
    if command == PROXY_COMMAND_LOCAL:
        return None
    if command != PROXY_COMMAND_PROXY:
        raise Refused("proxy-header", f"PROXY protocol command {command}")
    if family == PROXY_TCP4 and length >= 12:
        return str(ipaddress.IPv4Address(body[0:4])), struct.unpack(">H", body[8:10])[0]
    if family == PROXY_TCP6 and length >= 36:
        return str(ipaddress.IPv6Address(body[0:16])), struct.unpack(">H", body[32:34])[0]
    raise Refused("proxy-header", f"a PROXY header for address family 0x{family:02X}, not TCP over IPv4 or IPv6")


class CheckedAssociateRQ(A_ASSOCIATE_RQ):
    """An A-ASSOCIATE-RQ the front door decoded and turned into its primitive, with its
    bytes: the association's reading thread takes it as it is (dicomnode.reactor's DUL)
    instead of decoding the same bytes again. A console proposes up to 128 contexts, and
    pynetdicom makes and validates a pydicom UID for each name it decodes or copies:
    decoding and converting one request took 3-6 ms of CPU, twice per association."""

    data: bytes
    _primitive: Any = None

    def to_primitive(self) -> Any:
        # The primitive made at the check, once (the association then owns it); a fresh
        # one after that, as pynetdicom would make.
        primitive, self._primitive = self._primitive, None
        return primitive if primitive is not None else super().to_primitive()


def read_associate_rq(sock: socket.socket, deadline: float, timeout: float) -> CheckedAssociateRQ:
    """The connection's first PDU, whole, read before `deadline` (time.monotonic()); it
    must be an A-ASSOCIATE-RQ that pynetdicom can decode and turn into its primitive (an
    even presentation context ID, for one, would raise there and stop pynetdicom's reading
    thread, leaving the peer to wait out the ACSE timeout). Returns it decoded, its bytes
    in `data`. Raises Refused."""
    header = _read(sock, 6, deadline, timeout)
    pdu_type, _, length = struct.unpack(">BBL", header)
    if header == PROXY_V2_SIGNATURE[:6]:
        raise Refused(
            "proxy-untrusted",
            "a PROXY protocol header from an address that is not a trusted proxy (DICOM_PROXY_ADDRESSES)",
        )
    if pdu_type != ASSOCIATE_RQ:
        raise Refused(
            "not-an-associate-rq",
            f"the first PDU is of type 0x{pdu_type:02X}, not an A-ASSOCIATE-RQ",
            abort_reason=ABORT_UNEXPECTED_PDU,
        )
    if length > ASSOCIATE_RQ_CEILING:
        raise Refused(
            "associate-rq-too-large", f"an A-ASSOCIATE-RQ of {length} bytes is larger than {ASSOCIATE_RQ_CEILING}"
        )
    data = header + _read(sock, length, deadline, timeout)
    calling = data[26:42].decode("ascii", "replace").strip() if len(data) >= 42 else ""
    try:
        pdu = CheckedAssociateRQ()
        pdu.decode(data)
        pdu._primitive = pdu.to_primitive()
    except Exception as exc:
        raise Refused(
            "invalid-associate-rq",
            f"the A-ASSOCIATE-RQ cannot be decoded: {type(exc).__name__}: {exc}",
            abort_reason=ABORT_INVALID_PARAMETER,
            calling=calling,
        ) from None
    pdu.data = data
    return pdu


def _read(sock: socket.socket, count: int, deadline: float, timeout: float) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(chunks, timeout)
        sock.settimeout(remaining)
        try:
            data = sock.recv(min(count - len(chunks), 65536))
        except TimeoutError:
            raise _timed_out(chunks, timeout) from None
        except (OSError, ssl.SSLError) as exc:
            raise Refused("connection-lost", f"the connection failed before its A-ASSOCIATE-RQ: {exc}") from None
        if not data:
            raise Refused("connection-lost", "the peer closed the connection before its A-ASSOCIATE-RQ was complete")
        chunks += data
    return bytes(chunks)


def _timed_out(received: bytearray, timeout: float) -> Refused:
    what = "no A-ASSOCIATE-RQ" if not received else f"an A-ASSOCIATE-RQ incomplete ({len(received)} bytes)"
    return Refused("timeout", f"{what} within {timeout:g} s of connecting (DICOM_ASSOCIATE_TIMEOUT)")


def send_abort(sock: socket.socket, reason: int) -> None:
    """An A-ABORT from the service provider (PS3.8 9.3.8), best effort."""
    pdu = A_ABORT_RQ()
    pdu.source = ABORT_SOURCE_PROVIDER
    pdu.reason_diagnostic = reason
    try:
        sock.settimeout(1.0)
        sock.sendall(pdu.encode())
    except (OSError, ssl.SSLError):
        pass


def close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
