"""Several receiver processes on one port: a pre-forking parent that is the front door.

One Python process serves all its associations under one interpreter lock, so four
associations at once are no faster than one. With DICOM_RECEIVER_PROCESSES=N (N > 1)
`manage.py dicomnode` becomes a parent that

- listens on DICOM_HOST:DICOM_PORT and accepts every connection itself, applying the
  front door's limits (dicomnode.connections.Admission: per address, the waiting pool,
  the associations of registered AE titles) for all processes at once;
- hands each admitted connection to the worker process holding the fewest connections,
  over a Unix socket pair (the descriptor itself, SCM_RIGHTS), and
- answers its workers' questions about those limits (may this association take a place,
  the PROXY header named this peer) and notes what they give back.

The workers (`manage.py dicomnode --worker ...`, started by the parent) run the receiver
as a single process does, from the connection's own thread on: the PROXY header, TLS, the
A-ASSOCIATE-RQ within DICOM_ASSOCIATE_TIMEOUT, the association policy against the
database, the handlers, the association log row.

Why the parent keeps the counts, and not the database: the accept loop must never wait on
the database (a flood must be refused at once), and a worker that dies leaves no count
behind: the parent knows what it handed to each worker (its ledger) and gives it all back
when the worker's socket closes, then starts a new worker. Nothing a worker acknowledged
is lost with it: a C-STORE is answered only after its file and index row are durable.
What a worker was staging when it died stays in `.incoming/` until the next start, where
the orphan sweep resolves it (it cannot run while other workers are storing).

The messages are JSON, one per SOCK_SEQPACKET datagram.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from dicomnode import connections
from dicomnode.connections import Admission, Limits, RefusalLog, Refused
from dicomnode.handoff import MESSAGE_SIZE

logger = logging.getLogger("dicomnode")

WORKER_START_TIMEOUT = 120.0
WORKER_STOP_TIMEOUT = 10.0
# A worker that dies is started again, but not more often than this.
RESTART_DELAY = 1.0


def receiving_dir(index: int | None = None) -> Path:
    """Where pynetdicom writes the datasets being received: one folder per worker, so a
    new worker can clear what a dead one left half-written."""
    base = Path(settings.STORAGE_ROOT) / ".receiving"
    return base if index is None else base / f"worker-{index}"


# ---------------------------------------------------------------- the parent


@dataclass
class Ledger:
    """What one worker holds of the front door's counts, to give back if it dies."""

    connected: Counter[str] = field(default_factory=Counter)
    waiting: Counter[str] = field(default_factory=Counter)
    places: int = 0

    @property
    def open(self) -> int:
        return sum(self.connected.values())


class Worker:
    def __init__(self, index: int, front: FrontDoor) -> None:
        self.index = index
        self.ledger = Ledger()
        self.ready = False
        handoff_parent, handoff_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        calls_parent, calls_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.handoff, self.calls = handoff_parent, calls_parent
        folder = receiving_dir(index)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(Path(settings.BASE_DIR) / "manage.py"),
            "dicomnode",
            "--worker",
            f"{handoff_child.fileno()},{calls_child.fileno()},{index}",
            "--host",
            front.host,
            "--port",
            str(front.port),
        ]
        self.process = subprocess.Popen(command, pass_fds=(handoff_child.fileno(), calls_child.fileno()))  # noqa: S603
        handoff_child.close()
        calls_child.close()
        self.started_at = time.monotonic()

    def close(self) -> None:
        for sock in (self.handoff, self.calls):
            with contextlib.suppress(OSError):
                sock.close()


class FrontDoor:
    """The parent: accepts, admits, hands over, keeps the counts, restarts workers."""

    def __init__(self, host: str, port: int, processes: int, tls: bool) -> None:
        from dicomnode.server import front_door_limits

        # Bound now (the port is known, even port 0), listening only once the workers are
        # ready: until then a console is refused at once, not left waiting in the backlog
        # while the workers load.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.host, self.port = self.listener.getsockname()[:2]
        self.server_address = (self.host, self.port)
        self.processes = processes
        self.tls = tls
        self.admission = Admission(front_door_limits)
        self.refusals = RefusalLog()
        self.selector = selectors.DefaultSelector()
        self.workers: list[Worker] = []
        self._stop = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._restart_at: dict[int, float] = {}

    # -- lifecycle

    def start(self) -> None:
        """Start the workers, wait until each is ready, then accept on a thread."""
        for index in range(self.processes):
            self._spawn(index)
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while not all(worker.ready for worker in self.workers):
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver's worker processes did not start")
            self._poll(0.1)
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.selector.register(self._wake_read, selectors.EVENT_READ, ("wake", None))
        self._thread = threading.Thread(target=self._run, name="dicomnode-front-door", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.listener.close()
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.close()

    def worker_pids(self) -> list[int]:
        return [worker.process.pid for worker in self.workers]

    # -- the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll(0.5)
                self._restart_due()
            except Exception:
                logger.exception("the receiver's front door failed a turn; going on")
                time.sleep(0.1)

    def _poll(self, timeout: float) -> None:
        if not self.selector.get_map():
            # Before start(): only the workers' sockets matter.
            for worker in self.workers:
                self.selector.register(worker.calls, selectors.EVENT_READ, ("calls", worker))
        for key, _ in self.selector.select(timeout):
            kind, worker = key.data
            if kind == "accept":
                self._accept()
            elif kind == "calls":
                self._answer(worker)
            elif kind == "wake":
                with contextlib.suppress(OSError):
                    self._wake_read.recv(64)

    def _spawn(self, index: int) -> None:
        worker = Worker(index, self)
        if index < len(self.workers):
            self.workers[index] = worker
        else:
            self.workers.append(worker)
        if self.selector.get_map():
            self.selector.register(worker.calls, selectors.EVENT_READ, ("calls", worker))

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self._restart_at.items()):
            if now >= when and not self._stop.is_set():
                del self._restart_at[index]
                logger.warning("starting receiver worker %d again", index)
                self._spawn(index)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                client, client_address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                logger.exception("accept failed")
                return
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._admit(client, client_address)

    def _admit(self, client: socket.socket, client_address: Any) -> None:
        from dicomnode.server import admission_key

        address, port = str(client_address[0]), int(client_address[1])
        key, proxied = admission_key(address)
        refused = self.admission.admit(key, proxied=proxied)
        if refused is not None:
            self.refusals.record(address, port, refused, tls=self.tls, write_row_here=False)
            connections.close(client)
            return
        candidates = [worker for worker in self.workers if worker.ready and worker.process.poll() is None]
        for worker in sorted(candidates, key=lambda w: w.ledger.open):
            message = json.dumps({"address": address, "port": port}).encode()
            try:
                socket.send_fds(worker.handoff, [message], [client.fileno()])
            except OSError:
                continue
            worker.ledger.connected[key] += 1
            worker.ledger.waiting[key] += 1
            client.close()
            return
        # No worker can take it (all restarting): as if the pool were full.
        self.admission.closed(key, waiting=True)
        connections.close(client)
        logger.warning("connection from %s:%s closed: no receiver worker is running", address, port)

    def _answer(self, worker: Worker) -> None:
        try:
            data = worker.calls.recv(MESSAGE_SIZE)
        except OSError:
            data = b""
        if not data:
            self._worker_gone(worker)
            return
        message = json.loads(data)
        call = message["call"]
        ledger = worker.ledger
        reply: dict[str, Any] | None = None
        if call == "ready":
            worker.ready = True
            logger.info("receiver worker %d (pid %d) ready", worker.index, worker.process.pid)
        elif call == "request_complete":
            key = message["key"]
            self.admission.request_complete(key)
            _decrement(ledger.waiting, key)
        elif call == "closed":
            key = message["key"]
            self.admission.closed(key, waiting=message["waiting"])
            if message["waiting"]:
                _decrement(ledger.waiting, key)
            _decrement(ledger.connected, key)
        elif call == "take_association":
            taken = self.admission.take_association(message["address"])
            if taken:
                ledger.places += 1
            reply = {"taken": taken}
        elif call == "give_back_association":
            self.admission.give_back_association()
            ledger.places -= 1
        elif call == "readdress":
            key, address = message["key"], message["address"]
            refused = self.admission.readdress(key, address)
            _decrement(ledger.waiting, key)
            _decrement(ledger.connected, key)
            if refused is None:
                ledger.connected[address] += 1
                ledger.waiting[address] += 1
                reply = {"refused": None}
            else:
                reply = {"refused": [refused.kind, refused.why]}
        else:
            logger.error("receiver worker %d sent an unknown call %r", worker.index, call)
        if reply is not None:
            try:
                worker.calls.send(json.dumps(reply).encode())
            except OSError:
                self._worker_gone(worker)

    def _worker_gone(self, worker: Worker) -> None:
        """A worker's socket closed: it exited or was killed. Give back everything it held
        and start another (after RESTART_DELAY), unless the receiver is stopping."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(worker.calls)
        worker.close()
        ledger = worker.ledger
        for key, count in ledger.waiting.items():
            for _ in range(count):
                self.admission.closed(key, waiting=True)
            ledger.connected[key] -= count
        for key, count in ledger.connected.items():
            for _ in range(count):
                self.admission.closed(key, waiting=False)
        for _ in range(ledger.places):
            self.admission.give_back_association()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=5)
        if self._stop.is_set():
            return
        logger.error(
            "receiver worker %d (pid %d) ended with %s; its %d connections are closed",
            worker.index,
            worker.process.pid,
            worker.process.returncode,
            ledger.open,
        )
        self._restart_at[worker.index] = max(time.monotonic(), worker.started_at + RESTART_DELAY)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def start_front_door(host: str | None, port: int | None, processes: int) -> FrontDoor:
    from dicomnode.server import tls_context

    front = FrontDoor(
        host if host is not None else settings.DICOM_HOST,
        settings.DICOM_PORT if port is None else port,
        processes,
        tls=tls_context() is not None,
    )
    front.start()
    logger.info(
        "DICOM receiver %s listening on %s:%s with %d worker processes",
        settings.DICOM_AE_TITLE,
        front.host,
        front.port,
        processes,
    )
    return front


# ---------------------------------------------------------------- a worker


class RemoteAdmission:
    """A worker's view of the parent's Admission: the same calls, over the calls socket.
    One call at a time (a lock over the send and its answer)."""

    def __init__(self, calls: socket.socket) -> None:
        from dicomnode.server import front_door_limits

        self._calls = calls
        self._lock = threading.Lock()
        self._limits = front_door_limits

    @property
    def limits(self) -> Limits:
        return self._limits()

    def _send(self, message: dict[str, Any], *, answer: bool = False) -> dict[str, Any] | None:
        """Send a call; with `answer`, wait for the parent's. None when the parent is gone
        (the worker is about to stop: nothing is left to give back to)."""
        with self._lock:
            try:
                self._calls.send(json.dumps(message).encode())
                if not answer:
                    return None
                data = self._calls.recv(MESSAGE_SIZE)
            except OSError:
                return None
        if not data:
            return None
        result: dict[str, Any] = json.loads(data)
        return result

    def ready(self) -> None:
        self._send({"call": "ready"})

    def admit(self, address: str, *, proxied: bool = False) -> Refused | None:
        raise NotImplementedError("the parent admits connections")

    def readdress(self, proxy_key: str, address: str) -> Refused | None:
        result = self._send({"call": "readdress", "key": proxy_key, "address": address}, answer=True)
        if result is None:
            return Refused("connection-lost", "the receiver is stopping")
        refused = result["refused"]
        return Refused(refused[0], refused[1]) if refused else None

    def request_complete(self, address: str) -> None:
        self._send({"call": "request_complete", "key": address})

    def closed(self, address: str, *, waiting: bool) -> None:
        self._send({"call": "closed", "key": address, "waiting": waiting})

    def take_association(self, address: str) -> bool:
        result = self._send({"call": "take_association", "address": address}, answer=True)
        return bool(result and result["taken"])

    def give_back_association(self) -> None:
        self._send({"call": "give_back_association"})


def run_worker(handoff_fd: int, calls_fd: int, index: int, host: str, port: int) -> None:
    """A worker's life: serve the connections the parent hands over until it closes the
    socket pair or sends SIGTERM."""
    import tempfile

    from dicomnode import server as receiver
    from dicomnode.server import WorkerServer, start_worker_server

    receiver.PROCESS_NAME = f", worker {index}"
    tempfile.tempdir = str(receiving_dir(index))
    Path(tempfile.tempdir).mkdir(parents=True, exist_ok=True)
    handoff = socket.socket(fileno=handoff_fd)
    calls = socket.socket(fileno=calls_fd)
    admission = RemoteAdmission(calls)
    server: WorkerServer = start_worker_server(handoff, admission, (host, port))
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    admission.ready()
    try:
        while not stop.wait(0.5):
            if server.parent_gone.is_set() or os.getppid() == 1:
                break
    finally:
        server.shutdown()
