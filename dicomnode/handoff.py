"""The worker's side of the receiver's connection handoff (dicomnode.processes): a worker
process receives each connection's descriptor from the parent, with the peer's address, as
one message on a Unix socket. Its own module so that the association server
(dicomnode.server) can use it without importing the parent, which imports the server."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from typing import Any

# The largest message on the handoff and calls sockets.
MESSAGE_SIZE = 4096


class HandoffMixin(socketserver.BaseServer):
    """The worker side of the handoff: `get_request` takes a connection's descriptor from
    the parent instead of accepting one."""

    parent_gone: threading.Event

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock: Any = self.socket  # type: ignore[attr-defined]
        message, fds, _, _ = socket.recv_fds(sock, MESSAGE_SIZE, 1)
        if not message or not fds:
            self.parent_gone.set()
            raise OSError("the receiver's parent closed the handoff socket")
        details = json.loads(message)
        return socket.socket(fileno=fds[0]), (details["address"], int(details["port"]))
