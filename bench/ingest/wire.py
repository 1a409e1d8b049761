"""A push's rate at the server's side of the wire: when the first association's
A-ASSOCIATE-RQ reached the receiver's port and when its last C-STORE answer left it.

run.py's and run_queue.py's first rate runs from starting the storescu clients to their
exit: it includes each client's start-up before it connects (its dictionary load and
libraries, about 20 ms of CPU per process: docs/benchmarks-ingest.md, run 35) and its
release and exit, which a console on its own machine does not spend on the server's cores. This tap reads the
loopback device (a packet socket: needs root or CAP_NET_RAW in the network namespace)
through a kernel filter that keeps, of the IPv4 TCP traffic of one port, only the
packets a receiver sends with a payload (its A-ASSOCIATE-AC, its C-STORE answers in
P-DATA-TF, its A-RELEASE-RP) and the client's packets that begin with an A-ASSOCIATE-RQ
header (type 01, reserved 00), each cut to its first 128 bytes: about one packet per
instance, so the tap costs next to nothing during a push. Every packet carries the
kernel's time of receipt, so the figures do not depend on when the tap's thread runs.

The same for every receiver (Yunying, a bare pynetdicom SCP, storescp, Orthanc): it
looks only at the DICOM upper layer's PDU types on the wire.
"""

from __future__ import annotations

import ctypes
import select
import socket
import struct
import threading
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
SNAP = 128

# The PDU types (PS3.8 9.3.1) that the tap tells apart.
A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04


def _filter(port: int) -> list[tuple[int, int, int, int]]:
    """A classic BPF program over an Ethernet frame of the loopback device: keep an
    unfragmented IPv4 TCP segment from `port` with a payload, or to `port` whose payload
    starts with 01 00 (an A-ASSOCIATE-RQ's type and reserved byte), `SNAP` bytes of it."""
    ldh_abs, ldb_abs, ldh_ind, ldb_ind, ldxb_msh = 0x28, 0x30, 0x48, 0x50, 0xB1
    jeq, jgt, jset = 0x15, 0x25, 0x45
    and_k, rsh_k, add_x, sub_x, tax, ret = 0x54, 0x74, 0x0C, 0x1C, 0x07, 0x06
    # (code, jump-if-true label, jump-if-false label, k); labels resolved below.
    program: list[tuple[int, str | int, str | int, int]] = [
        (ldh_abs, 0, 0, 12),  # the Ethernet type
        (jeq, 0, "drop", 0x0800),
        (ldb_abs, 0, 0, 23),  # the IP protocol
        (jeq, 0, "drop", 6),
        (ldh_abs, 0, 0, 20),  # flags and fragment offset
        (jset, "drop", 0, 0x1FFF),
        (ldxb_msh, 0, 0, 14),  # X = the IP header's length
        (ldh_ind, 0, 0, 14),  # the source port
        (jeq, "server", 0, port),
        (ldh_ind, 0, 0, 16),  # the destination port
        (jeq, "client", "drop", port),
        # server: the receiver's segment, kept when it carries a payload.
        (ldb_ind, 0, 0, 26),  # the TCP data offset, in its high nibble
        (and_k, 0, 0, 0xF0),
        (rsh_k, 0, 0, 2),
        (add_x, 0, 0, 0),
        (tax, 0, 0, 0),  # X = IP and TCP headers' length
        (ldh_abs, 0, 0, 16),  # IP total length
        (sub_x, 0, 0, 0),
        (jgt, "keep", "drop", 0),
        # client: kept when its payload starts as an A-ASSOCIATE-RQ.
        (ldb_ind, 0, 0, 26),
        (and_k, 0, 0, 0xF0),
        (rsh_k, 0, 0, 2),
        (add_x, 0, 0, 0),
        (tax, 0, 0, 0),
        (ldh_abs, 0, 0, 16),
        (sub_x, 0, 0, 0),
        (jgt, 0, "drop", 5),
        (ldh_ind, 0, 0, 14),  # the payload's first two bytes
        (jeq, "keep", "drop", A_ASSOCIATE_RQ << 8),
        (ret, 0, 0, SNAP),  # keep
        (ret, 0, 0, 0),  # drop
    ]
    labels = {"server": 11, "client": 19, "keep": len(program) - 2, "drop": len(program) - 1}

    def offset(at: int, target: str | int) -> int:
        return 0 if isinstance(target, int) else labels[target] - at - 1

    return [(code, offset(at, jt), offset(at, jf), k) for at, (code, jt, jf, k) in enumerate(program)]


@dataclass
class Wire:
    """What the tap saw of one push, kernel times in seconds (CLOCK_REALTIME)."""

    # client port -> arrival of its association's A-ASSOCIATE-RQ
    requests: dict[int, float] = field(default_factory=dict)
    # client port -> the last P-DATA-TF the receiver sent on it (its last C-STORE answer)
    last_answers: dict[int, float] = field(default_factory=dict)
    answers: int = 0  # P-DATA-TF segments the receiver sent
    answer_times: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """From the first A-ASSOCIATE-RQ to the last C-STORE answer (nan if not seen)."""
        if not self.requests or not self.last_answers:
            return float("nan")
        return max(self.last_answers.values()) - min(self.requests.values())

    @property
    def spread(self) -> float:
        """From the first association's request to the last's: the clients' start-ups
        that fall inside the window (0 with one association)."""
        if not self.requests:
            return float("nan")
        return max(self.requests.values()) - min(self.requests.values())

    def rate(self, count: int) -> float:
        seconds = self.seconds
        return count / seconds if seconds > 0 else float("nan")

    def steady_rate(self) -> float:
        """Answers per second while every association was open: from the last
        association's request to the first association's last answer (nan if they never
        were all open at once). No client's start-up runs in it, nor any association's
        ramp up or down; with one association it is the wire rate."""
        if not self.requests or not self.last_answers:
            return float("nan")
        start, end = max(self.requests.values()), min(self.last_answers.values())
        if end <= start:
            return float("nan")
        return sum(1 for stamp in self.answer_times if start < stamp <= end) / (end - start)


def parse(frame: bytes, port: int) -> tuple[str, int, int] | None:
    """('request' | 'answer' | 'other', client port, first payload byte) of a kept frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ip_header = (frame[14] & 0x0F) * 4
    tcp = 14 + ip_header
    if len(frame) < tcp + 20:
        return None
    source, destination = struct.unpack_from("!HH", frame, tcp)
    payload = tcp + (frame[tcp + 12] >> 4) * 4
    if len(frame) <= payload:
        return None
    first = frame[payload]
    if destination == port:
        return ("request" if first == A_ASSOCIATE_RQ else "other", source, first)
    if source == port:
        return ("answer" if first == P_DATA_TF else "other", destination, first)
    return None


class WireTap:
    """`with WireTap(port) as tap: ...push...`, then `tap.wire`. `tap.error` says why
    nothing was read (no packet socket: not root), and the wire figures are then nan."""

    def __init__(self, port: int, interface: str = "lo") -> None:
        self.port, self.interface = port, interface
        self.wire = Wire()
        self.error: str | None = None
        self.dropped = 0
        self._socket: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        # Protocol 0 receives nothing until bind: the filter is in place before any packet.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        program = _filter(self.port)
        code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
        buffer = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((self.interface, ETH_P_ALL))
        return sock

    def __enter__(self) -> WireTap:
        try:
            self._socket = self._open()
        except OSError as error:
            self.error = f"no packet socket on {self.interface}: {error}"
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._socket is None:
            return
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _run(self) -> None:
        assert self._socket is not None
        sock = self._socket
        ancillary = socket.CMSG_SPACE(16)
        while True:
            # After the stop, read what the kernel still holds, then end.
            ready, _, _ = select.select([sock], [], [], 0 if self._stop.is_set() else 0.05)
            if not ready:
                if self._stop.is_set():
                    return
                continue
            frame, messages, _, address = sock.recvmsg(SNAP, ancillary)
            if address[2] == PACKET_OUTGOING:
                # The loopback device shows every packet twice: as sent, and as received.
                continue
            stamp = next(
                (
                    sec + nsec / 1e9
                    for level, kind, data in messages
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                    for sec, nsec in [struct.unpack("qq", data[:16])]
                ),
                None,
            )
            seen = parse(frame, self.port)
            if stamp is None or seen is None:
                self.dropped += 1
                continue
            self.note(*seen[:2], stamp)

    def note(self, kind: str, client: int, stamp: float) -> None:
        wire = self.wire
        if kind == "request":
            # The first such segment of a connection is its A-ASSOCIATE-RQ; a later one
            # is a piece of a dataset that happens to start with 01 00.
            wire.requests.setdefault(client, stamp)
        elif kind == "answer" and client in wire.requests:
            wire.answers += 1
            wire.answer_times.append(stamp)
            wire.last_answers[client] = stamp
