#!/usr/bin/env python
"""The interpreter lock's convoy, isolated from the receiver: reader threads in one
process each receive 60 MB over loopback TCP in 128 KB PDUs, as pynetdicom's DUL thread
does, while other threads of the process do Python work (other associations' handlers).
The readers use pynetdicom's loop of 4 KB recv() calls, or one recv() per PDU as the
receiver's socket does (dicomnode.reactor.read_ahead). Every recv() gives the lock away;
with a thread computing beside it, winning it back can take the whole switch interval
(5 ms), so what a reader gets done per turn is what matters.

    .venv/bin/python bench/ingest/convoy.py [--megabytes 60]

On a loaded machine it is slow in the way it measures: each handover of the lock waits
for the computing thread to be scheduled.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable

PDU = 128 * 1024
TOTAL = 60 * 1024 * 1024
READ_AHEAD = 256 * 1024


def sender(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        block = b"x" * PDU
        for _ in range(TOTAL // PDU):
            sock.sendall(block)


def read_4k(sock: socket.socket, size: int) -> bytearray:
    """pynetdicom 3.0.4's AssociationSocket.recv."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(4096, size - len(data)))
        if not chunk:
            break
        data.extend(chunk)
    return data


def read_whole(sock: socket.socket, size: int) -> bytearray:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(max(READ_AHEAD, size - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def trial(readers: int, computing: int, read: Callable[[socket.socket, int], bytearray]) -> float:
    """MB/s received by all readers together."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        senders = [multiprocessing.Process(target=sender, args=(port,)) for _ in range(readers)]
        for process in senders:
            process.start()
        connections = [listener.accept()[0] for _ in range(readers)]
    stop = threading.Event()

    def compute() -> None:
        while not stop.is_set():
            sum(i * i for i in range(300))

    def receive(sock: socket.socket) -> None:
        while len(read(sock, PDU)) == PDU:
            pass

    others = [threading.Thread(target=compute) for _ in range(computing)]
    threads = [threading.Thread(target=receive, args=(sock,)) for sock in connections]
    started = time.perf_counter()
    for thread in others + threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in others:
        thread.join()
    for process in senders:
        process.join()
    for sock in connections:
        sock.close()
    return readers * TOTAL / elapsed / 1e6


def main() -> None:
    global TOTAL
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=60, help="MB each reader receives (default 60)")
    TOTAL = parser.parse_args().megabytes * 1024 * 1024
    print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| readers | threads computing beside them | 4 KB recv() MB/s | one recv() per PDU MB/s | ratio |")
    print("|---|---|---:|---:|---:|")
    for readers, computing in ((1, 0), (1, 1), (3, 0), (3, 1)):
        small = trial(readers, computing, read_4k)
        whole = trial(readers, computing, read_whole)
        print(f"| {readers} | {computing} | {small:,.0f} | {whole:,.0f} | {whole / small:.1f} |", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
