#!/usr/bin/env python
"""The reference for the receiver's own path: a bare pynetdicom Storage SCP.

It accepts any calling AE, writes each received dataset's bytes to a file (with
`--fsync`, fsynced before Success) and nothing else: no index, no parse, no policy.
Stock pynetdicom, its own reactors and polling, TCP_NODELAY on every accepted socket
(as the Yunying receiver and the dcmtk receivers of run.py have). What the receiver
does beyond this is its own cost.

    .venv/bin/python bench/ingest/bare_scp.py --port 11112 --out /tmp/bare [--fsync]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


class NoDelayServer(ThreadedAssociationServer):
    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


def make_server(
    host: str,
    port: int,
    out: Path,
    *,
    fsync: bool,
    aet: str = "CLOUDPACS",
    max_pdu: int = 131072,
    request_handler: Any = None,
) -> ThreadedAssociationServer:
    """The bare SCP, listening: serve_forever runs in a thread of its own.
    profile_path.py --bare counts its instructions beside the receiver's."""
    out.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1 << 62))
    lock = threading.Lock()

    def handle_store(event: evt.Event) -> int:
        with lock:
            number = next(counter)
        path = out / f"{number:08d}.dcm"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.write(fd, event.encoded_dataset())
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return 0x0000

    ae = AE(ae_title=aet)
    ae.maximum_pdu_size = max_pdu
    ae.maximum_associations = 64
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, [EXPLICIT_LE, IMPLICIT_LE])
    ae.add_supported_context("1.2.840.10008.1.1")
    server = ae.make_server(
        (host, port),
        evt_handlers=[(evt.EVT_C_STORE, handle_store)],
        server_class=NoDelayServer,  # type: ignore[arg-type]
        request_handler=request_handler,
    )
    # As start_server registers it: its shutdown() takes it off the AE's list.
    ae._servers.append(server)
    threading.Thread(target=server.serve_forever, name="bare-scp", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--aet", default="CLOUDPACS")
    parser.add_argument("--max-pdu", type=int, default=131072)
    parser.add_argument("--fsync", action="store_true", help="fsync each file before answering Success")
    args = parser.parse_args()
    server = make_server(args.host, args.port, args.out, fsync=args.fsync, aet=args.aet, max_pdu=args.max_pdu)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
