"""The associations' database connections, kept from one association to the next.

Each association runs on a thread of its own and Django gives each thread its own
connection, so every association opened one and closed it at its end: on PostgreSQL a new
backend each time (forked, authenticated, its catalog caches filled: about 6.4 ms of the
database's CPU and 1.7 ms of the receiver's, docs/benchmarks-ingest.md run 19), and the
statements of every instance prepared again on it (cloudpacs.services._prepared_cursor).

Here an association that ends leaves its thread's connection with its server
(`IdleConnections.give`) and the next association's thread takes it (`take`), most
recently used first. What is kept is only a connection at rest: autocommit on, no
transaction open, no error since its last statement. A kept connection is checked when it
is taken (one `SELECT 1`): one that PostgreSQL has closed meanwhile (a restart, an
administrator's pg_terminate_backend, idle_session_timeout) is dropped, and the
association opens a new one as before. A connection that fails during an association is
closed by the handler that saw the error (dicomnode.server._ingest), as before.

SQLite connections are not kept: opening one costs little, and one per association keeps
each association's WAL checkpoint at its end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

# Connections kept per receiver process: more associations than this at once open the
# rest as before, and close them at their end.
MOST_KEPT = 8
# A connection left unused this long is closed rather than kept: the backend's memory
# goes back to PostgreSQL after a burst.
KEPT_SECONDS = 300.0


class IdleConnections:
    """The database connections of a receiver's ended associations, for its next ones."""

    def __init__(self, most: int = MOST_KEPT, kept_seconds: float = KEPT_SECONDS) -> None:
        self.most = most
        self.kept_seconds = kept_seconds
        self._idle: list[tuple[float, Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)

    def backend_pids(self) -> list[int]:
        """The PostgreSQL backends of the kept connections (for tests and logs)."""
        with self._lock:
            return [wrapper.connection.info.backend_pid for _, wrapper in self._idle]

    def take(self) -> bool:
        """On an association's thread, before its first query: make a kept connection this
        thread's. False when none was kept or none still works (the thread then opens its
        own at its first query)."""
        while True:
            with self._lock:
                if not self._idle:
                    return False
                since, wrapper = self._idle.pop()
            if time.monotonic() - since > self.kept_seconds or not wrapper.is_usable():
                _close(wrapper)
                continue
            own = _initialized()
            if own is not None:
                own.close()
            # Django ties a connection to the thread that made it (validate_thread_sharing);
            # this one is now this thread's alone.
            wrapper._thread_ident = threading.get_ident()
            connections[DEFAULT_DB_ALIAS] = wrapper
            return True

    def give(self) -> None:
        """On an association's thread as it ends: keep its connection for the next
        association if it is at rest and there is room, close it otherwise. The thread
        then has no connection (a query after this opens a new one)."""
        wrapper = _initialized()
        if wrapper is None:
            return
        del connections[DEFAULT_DB_ALIAS]
        if not _at_rest(wrapper):
            _close(wrapper)
            return
        # Kept until taken: Django's close_old_connections, which a taking thread may call,
        # must not close it for its age (CONN_MAX_AGE 0 makes every connection obsolete).
        wrapper.close_at = None
        now = time.monotonic()
        with self._lock:
            # The least recently used are at the bottom, where a steady trickle of
            # associations never reaches: those unused too long go now.
            stale = [kept for kept in self._idle if now - kept[0] > self.kept_seconds]
            self._idle = [kept for kept in self._idle if now - kept[0] <= self.kept_seconds]
            keep = not self._closed and len(self._idle) < self.most
            if keep:
                self._idle.append((now, wrapper))
        for _, old in stale:
            _close(old)
        if not keep:
            _close(wrapper)

    def close_all(self) -> None:
        """The receiver is stopping: close what is kept, and whatever is given after."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for _, wrapper in idle:
            _close(wrapper)


def _initialized() -> Any:
    """This thread's default connection wrapper, if the thread has made one."""
    for wrapper in connections.all(initialized_only=True):
        if wrapper.alias == DEFAULT_DB_ALIAS:
            return wrapper
    return None


def _at_rest(wrapper: Any) -> bool:
    if wrapper.vendor != "postgresql" or wrapper.connection is None or wrapper.closed_in_transaction:
        return False
    if wrapper.in_atomic_block or wrapper.errors_occurred or wrapper.needs_rollback:
        return False
    if wrapper.get_autocommit() != wrapper.settings_dict["AUTOCOMMIT"]:
        return False
    from psycopg import pq

    return bool(wrapper.connection.info.transaction_status == pq.TransactionStatus.IDLE)


def _close(wrapper: Any) -> None:
    wrapper._thread_ident = threading.get_ident()
    with contextlib.suppress(Exception):
        wrapper.close()
