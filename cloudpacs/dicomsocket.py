"""The socket of every DICOM association the platform's processes hold, checked for bytes
to read with poll(), not select().

pynetdicom's AssociationSocket asks select() whether bytes wait, and select() raises for a
descriptor numbered 1024 or more: a process holding that many (connections, files,
database connections) took each newer connection for closed (Evt17). The receiver's
accepted connections (dicomnode.server.CappedAssociationSocket), the associations it opens
(C-MOVE sub-operations, storage commitment reports: dicomnode.reactor.install_requestor)
and the reports consults sends back to a township (cloudpacs.services.open_association)
all use `PollingSocket`.

`PollingSocket.ready` stands in for pynetdicom's, so it is pinned (cloudpacs.pinning) to
the version it was written against: on another, sockets stay pynetdicom's (logged once)
and tests/test_dicomnode_reactor.py fails until someone has compared the two.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

from cloudpacs import pinning

# What `PollingSocket.ready` stands in for on pynetdicom 3.0.4: the check for bytes to
# read that both of pynetdicom's DUL loops make.
SOCKET_PIN = pinning.Pin(
    "3.0.4",
    (
        AssociationSocket.ready.fget,  # type: ignore[attr-defined]
        "3eb58e3d39dc076df7a04c804ca183ffd3f4d1b34361039e9e6f11de3d45579c",
    ),
    otherwise="associations check their sockets with select(), which takes a descriptor numbered 1024 or more"
    " for a closed connection",
)


def readable(fds: list[Any], timeout: float) -> set[int]:
    """The descriptors among `fds` (sockets or numbers) that have something to read, or
    have hung up or failed, within `timeout` seconds: poll(), not select(), which cannot
    watch a descriptor numbered 1024 or more (ValueError). A closed socket (number -1) or
    a descriptor that is not open raises OSError, as select() did."""
    poller = select.poll()
    numbers = []
    for f in fds:
        number = f if isinstance(f, int) else f.fileno()
        if number < 0:
            raise OSError("the socket is closed")
        numbers.append(number)
        poller.register(number, select.POLLIN | select.POLLPRI)
    found: set[int] = set()
    for number, events in poller.poll(max(0, round(timeout * 1000))):
        if events & select.POLLNVAL:
            raise OSError(f"descriptor {number} is not open")
        found.add(number)
    return found


class PollingSocket(AssociationSocket):
    """pynetdicom's socket whose check for bytes to read asks poll(): pynetdicom's asks
    select(), which raises for a descriptor numbered 1024 or more, and a process holding
    many connections (and files, and database connections) then took every newer
    connection for closed (Evt17).

    `seen_readable`, set by an event loop whose own poll() just found the connection
    readable (dicomnode.reactor's DUL loop waits in poll() on the socket and its waker),
    answers the next check without asking poll() again: once per PDU that the loop waited
    for. Nothing but this socket's reads takes bytes from the connection, and each read
    clears it."""

    seen_readable = False

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if self.seen_readable:
            self.seen_readable = False
            return True
        try:
            found = bool(readable([sock], 0))
        except OSError:
            self.event_queue.put("Evt17")  # the transport connection closed
            return False
        # An SSL socket may hold decrypted bytes that poll() cannot see.
        return found or (isinstance(sock, ssl.SSLSocket) and bool(sock.pending()))

    def recv(self, nr_bytes: int) -> bytearray:
        self.seen_readable = False
        return super().recv(nr_bytes)


def poll_socket(assoc: Association) -> None:
    """Make an association's socket a `PollingSocket` with Nagle's algorithm off (with it
    on, each small message behind a larger one waits for the peer's delayed ACK, 40 ms).
    From its EVT_CONN_OPEN, before the association loop looks at the socket; on a
    pynetdicom `PollingSocket` was not written for, the check stays pynetdicom's."""
    sock: Any = getattr(assoc.dul, "socket", None)
    if SOCKET_PIN.compatible() and type(sock) is AssociationSocket:
        sock.__class__ = PollingSocket
    raw = getattr(sock, "socket", None)
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def on_open(event: evt.Event) -> None:
    """EVT_CONN_OPEN of an association the platform opens: `poll_socket`."""
    poll_socket(event.assoc)
