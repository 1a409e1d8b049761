"""The image store: DICOM Part 10 files under STORAGE_ROOT, written durably.

A received dataset is put into `.incoming/` as a Part 10 file (preamble, a file meta
group built for it, then the dataset bytes exactly as received), linked to its final
key, and fsynced with its directory; the index row comes after that, in the caller's
transaction (or, for an instance of a known series, beside the fsync: see
cloudpacs.services._store and UnsyncedFile), and only once both are done is the
`.incoming/` name dropped. A crash at any step leaves
a file in `.incoming/`, which `sweep_orphans()` resolves at the next start: if its key
was never indexed, both the temporary and the final file go. While a process stages a
file it holds an exclusive lock on it (flock, released by the kernel when the process
dies), so the sweep of a receiver starting beside a web server that is storing over
STOW-RS passes over that file instead of taking it for a crash's. Keys are derived from the
UIDs and the dataset's SHA-256, so an identical re-send lands on the same key and a
conflicting one on a different key, never overwriting what the index points at.

With STORAGE_BACKEND=s3 the files live in an S3-compatible object store instead
(`cloudpacs.objectstore`): `.incoming/` under STORAGE_ROOT is then the receiving node's
spool, `publish` PUTs the staged file at its key and returns once the store acknowledged
it, and the rest is the same: the index row after that, the spool file dropped only after
the commit, `sweep_orphans` resolving what a crash left in the spool. Every read of a
stored file goes through `open_key` (a seekable file; ranged GETs on the object store) or
`iter_key` (the bytes in order), never through a path, so that the same code serves both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from cloudpacs.objectstore import S3Config, S3Store, StoreUnavailable

__all__ = ["StoreUnavailable"]

logger = logging.getLogger("cloudpacs.storage")

INCOMING = ".incoming"
CHUNK = 1024 * 1024
PREAMBLE = b"\x00" * 128 + b"DICM"
IMPLEMENTATION_VERSION_NAME = "YUNYING_01"


@dataclass(frozen=True)
class StagedFile:
    """A complete Part 10 file in `.incoming/`, not yet at its key."""

    path: Path
    sha256: str  # of the dataset bytes as received, without the file meta group
    size: int  # of the whole Part 10 file
    dataset_offset: int
    # A descriptor holding an exclusive flock on the file while it is staged (-1: none).
    lock: int = -1


def root() -> Path:
    return Path(settings.STORAGE_ROOT)


_ensured: set[Path] = set()


def incoming_dir() -> Path:
    path = root() / INCOMING
    if path not in _ensured or not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        _ensured.add(path)
    return path


def _incoming_name(suffix: str) -> Path:
    """A new name in `.incoming/` without looking whether the directory is still there
    (once made in this process): for a rename into it, which fails if it went since, and
    the caller then copies into `incoming_dir()`, which makes it again."""
    path = root() / INCOMING
    if path not in _ensured:
        path = incoming_dir()
    return path / f"{uuid.uuid4().hex}{suffix}"


def path_for(key: str) -> Path:
    return root() / key


def key_for(study_uid: str, sop_instance_uid: str, sha256: str) -> str:
    """`<study hash[:2]>/<study hash>/<instance hash>-<content hash>.dcm`: a study's files
    share a directory, and UIDs are hashed so no value a modality sends shapes a path."""
    study_hash = hashlib.sha256(study_uid.encode("ascii", "replace")).hexdigest()[:32]
    uid_hash = hashlib.sha256(sop_instance_uid.encode("ascii", "replace")).hexdigest()[:32]
    return f"{study_hash[:2]}/{study_hash}/{uid_hash}-{sha256[:16]}.dcm"


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str = "") -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buffer = BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()


def part10_dataset_offset(head: bytes) -> int | None:
    """Where the dataset starts in a Part 10 file whose first bytes are `head`, or None
    when `head` is not the start of a Part 10 file (a bare dataset)."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    # (0002,0000) UL File Meta Information Group Length, explicit VR little endian.
    if head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    (group_length,) = struct.unpack("<I", head[140:144])
    return 144 + group_length


def _digest_from(stream: BinaryIO, offset: int) -> str:
    stream.seek(offset)
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def stage(
    source: Path | BinaryIO,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae: str = "",
    adopt: bool = False,
    sha256: str | None = None,
) -> StagedFile:
    """Put a received dataset into `.incoming/` as a Part 10 file (not yet fsynced:
    `publish` does that once the file has its final name).

    `source` is either a path to a Part 10 file (what pynetdicom writes when it receives a
    dataset chunked to disk) or a binary stream of the bare dataset bytes. With `adopt`,
    a Part 10 file on the same filesystem is moved rather than copied: pynetdicom built
    its meta group from the request and the accepted context, as we would. Otherwise the
    dataset bytes are copied behind a meta group of ours. Never decoded either way.
    `sha256`, the dataset's digest computed by the caller, is used only when adopting."""
    if adopt and isinstance(source, str | os.PathLike):
        adopted = _adopt(Path(source), _incoming_name(".part"), sha256)
        if adopted is not None:
            return adopted
    temp = incoming_dir() / f"{uuid.uuid4().hex}.part"
    meta = file_meta_bytes(sop_class_uid, sop_instance_uid, transfer_syntax_uid, source_ae)
    digest = hashlib.sha256()
    opened = isinstance(source, str | os.PathLike)
    stream: Any = open(source, "rb") if opened else source  # type: ignore[arg-type]  # noqa: SIM115
    try:
        head = stream.read(4096)
        offset = part10_dataset_offset(head)
        if offset is not None:
            if offset > len(head):
                stream.seek(offset)
                head = b""
            else:
                head = head[offset:]
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        lock = -1
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                lock = _locked(temp)
                out.write(PREAMBLE + meta)
                size = len(PREAMBLE) + len(meta)
                chunk = head
                while chunk:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    chunk = stream.read(CHUNK)
        except BaseException:
            temp.unlink(missing_ok=True)
            if lock >= 0:
                os.close(lock)
            raise
    finally:
        if opened:
            stream.close()
    return StagedFile(
        path=temp, sha256=digest.hexdigest(), size=size, dataset_offset=len(PREAMBLE) + len(meta), lock=lock
    )


def _locked(path: Path | str) -> int:
    """A read-only descriptor of `path` holding an exclusive flock on it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _adopt(source: Path, temp: Path, sha256: str | None = None) -> StagedFile | None:
    """Move `source` to `temp`. `sha256` is the dataset's digest when the caller computed
    it from the bytes it wrote there (the receiver, as they arrived)."""
    lock = -1
    try:
        # Locked before it is moved, so that it is never in `.incoming/` unlocked. A source
        # on another filesystem than the store fails to move (EXDEV) and is copied.
        lock = _locked(source)
        offset = part10_dataset_offset(os.pread(lock, 4096, 0))
        if offset is None:
            os.close(lock)
            return None
        os.rename(source, temp)
    except OSError:
        if lock >= 0:
            os.close(lock)
        return None
    try:
        if sha256 is None:
            with open(temp, "rb") as stream:
                sha256 = _digest_from(stream, offset)
        size = os.fstat(lock).st_size
    except BaseException:
        os.close(lock)
        raise
    return StagedFile(path=temp, sha256=sha256, size=size, dataset_offset=offset, lock=lock)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Directories whose entries (their own, their parents' up to the store's root) this
# process has made durable: a file linked into one needs only its own fsync and the
# directory's. Forgotten all at once when it grows past DURABLE_DIRS_KEPT (a study's
# directory is then synced once more).
_durable_dirs: set[Path] = set()
DURABLE_DIRS_KEPT = 10_000


def _ensure_dir(path: Path, *, look: bool = True) -> None:
    """`path` is a directory and its entry durable: made (with its parents) if missing,
    and each entry this process did not make durable yet synced through its parent's
    fsync, once per process. A directory found there may have been made a moment ago by
    another thread or process whose fsync of its parent has not returned yet. Without
    `look`, one this process made durable is taken to be there still (the caller finds
    out otherwise, and asks again after `_durable_dirs.discard(path)`)."""
    if path in _durable_dirs and (not look or path.is_dir()):
        return
    _durable_dirs.discard(path)
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    path.mkdir(parents=True, exist_ok=True)
    # A new directory entry is only durable once its parent is synced; under the store's
    # root, so is one that this process has not synced yet.
    unsynced = set(missing)
    base = root()
    current = path
    while current != base and base in current.parents and current not in _durable_dirs:
        unsynced.add(current)
        current = current.parent
    for directory in sorted(unsynced, key=lambda item: len(item.parts)):
        _fsync_dir(directory.parent)
    if len(_durable_dirs) >= DURABLE_DIRS_KEPT:
        _durable_dirs.clear()
    _durable_dirs.update(unsynced)
    _durable_dirs.add(path)


# --- Which store ----------------------------------------------------------------------

_stores: dict[S3Config, S3Store] = {}


def s3_config() -> S3Config:
    """The object store the S3_* settings name (whatever STORAGE_BACKEND says: the
    commands that move an archive between backends use it either way)."""
    if not getattr(settings, "S3_BUCKET", ""):
        raise ImproperlyConfigured("S3_BUCKET is not set")
    return S3Config(
        bucket=settings.S3_BUCKET,
        prefix=settings.S3_PREFIX,
        endpoint_url=settings.S3_ENDPOINT_URL,
        region=settings.S3_REGION,
        access_key_id=settings.S3_ACCESS_KEY_ID,
        secret_access_key=settings.S3_SECRET_ACCESS_KEY,
        addressing_style=settings.S3_ADDRESSING_STYLE,
        timeout=settings.S3_TIMEOUT,
        max_attempts=settings.S3_MAX_ATTEMPTS,
        ca_bundle=str(settings.S3_CA_BUNDLE) if settings.S3_CA_BUNDLE else None,
    )


def s3_store() -> S3Store:
    config = s3_config()
    store = _stores.get(config)
    if store is None:
        store = _stores.setdefault(config, S3Store(config))
    return store


def backend_name() -> str:
    return str(getattr(settings, "STORAGE_BACKEND", "local"))


def _object_store() -> S3Store | None:
    return s3_store() if backend_name() == "s3" else None


# --- Writing ----------------------------------------------------------------------------


def publish(staged: StagedFile, key: str, linked: Callable[[bool], None] | None = None) -> bool:
    """Give the staged file its final name (a hard link, so that `.incoming/` still holds
    it until the index commits), then make its content and its name durable. Returns
    whether the name is new: when it is not, the same UID with the same content is there
    already (a re-send, or a file left by a crash), and the caller must not remove it.
    `linked` is told the same as soon as the name is there, before the fsyncs (on the
    object store, once the PUT is acknowledged).

    On the object store: the spool file is fsynced (so that a crash after the PUT leaves
    it for `sweep_orphans`), then PUT at its key unless an object is there already; it
    returns once the store acknowledged the PUT. Raises StoreUnavailable when the store
    is down, too slow (S3_TIMEOUT, S3_MAX_ATTEMPTS) or refuses the PUT."""
    store = _object_store()
    if store is not None:
        _fsync_file(staged.path)
        put = not store.exists(key)
        if put:
            store.put_file(staged.path, key, staged.sha256)
        if linked is not None:
            linked(put)
        return put
    final = path_for(key)
    created = True
    try:
        _link(staged.path, final)
    except FileExistsError:
        created = False
    if linked is not None:
        linked(created)
    # A name made here is the staged file's own: fsynced through the descriptor that holds
    # its lock. A name found there may be another file (identical content), synced by name.
    _sync_with_directory(final, staged.lock if created else -1)
    return created


def _link(source: Path, final: Path) -> None:
    """A hard link `final` to `source`, in a directory made durable first (_ensure_dir:
    once per directory and process, not looked for before each link)."""
    directory = final.parent
    _ensure_dir(directory, look=False)
    try:
        os.link(source, final)
    except FileNotFoundError:
        # The directory went since this process made it durable (or the source went).
        _durable_dirs.discard(directory)
        _ensure_dir(directory)
        os.link(source, final)


def _sync_with_directory(final: Path, fd: int = -1) -> None:
    """The data and the directory's new entry, each fsynced, both at once: each makes
    durable what was written before it began (the link, the data), and one after the
    other they cost two device flushes (on ext4 the directory's, its journal already
    committed by the file's, still flushed the disk's cache: 4.3 ms after a 4.7 ms
    fsync of the file, loaded), at once about one. The directory's fsync is shared with
    the names made in it meanwhile by other threads (_DirectorySync)."""
    directory, request = _DirectorySync.request(final.parent)
    try:
        _fsync_file(final, fd)
    finally:
        error = directory.wait(request)
    if error is not None:
        raise error


class _SyncRequest:
    """A name made in a directory, waiting for a fsync of it that began afterwards."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class _DirectorySync:
    """The fsyncs of one directory, shared (a group commit): a fsync makes durable every
    entry made in the directory before it began, so a thread that made a name asks
    (`request`, after the link or rename returned) and waits for the next fsync that
    begins after its request. While one fsync runs, the names made meanwhile wait for
    the next, which covers them all: four associations storing one study into its
    directory share its fsyncs instead of making one each. A fsync that fails fails
    every request it was to cover. One syncer per directory at a time, on the
    fsync-directory pool, which runs nothing else, so it never waits for a thread held
    by a publish that waits for it."""

    lock = threading.Lock()
    # The directories with a syncer running, or requests waiting for one.
    active: dict[Path, _DirectorySync] = {}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.changed = threading.Condition(_DirectorySync.lock)
        self.requests: list[_SyncRequest] = []
        self.running = False

    @classmethod
    def request(cls, path: Path) -> tuple[_DirectorySync, _SyncRequest]:
        """Ask for a fsync of `path` that begins after now: call it once the entry to be
        made durable is there."""
        request = _SyncRequest()
        with cls.lock:
            directory = cls.active.get(path)
            if directory is None:
                directory = cls.active[path] = cls(path)
            directory.requests.append(request)
            start = not directory.running
            directory.running = True
        if start:
            try:
                _pool(_SYNCING).submit(directory._run)
            except RuntimeError:
                # The interpreter is shutting down and takes no new thread: here, then.
                directory._run()
        return directory, request

    def _run(self) -> None:
        while True:
            with self.lock:
                # Taken before the fsync begins: each of them was asked for before it.
                batch, self.requests = self.requests, []
                if not batch:
                    self.running = False
                    if self.active.get(self.path) is self:
                        del self.active[self.path]
                    return
            error: BaseException | None = None
            try:
                _fsync_dir(self.path)
            except BaseException as exc:
                error = exc
            with self.lock:
                for request in batch:
                    request.done = True
                    request.error = error
                self.changed.notify_all()

    def wait(self, request: _SyncRequest) -> BaseException | None:
        """Wait until a fsync that began after `request` has returned; what it raised,
        as an exception of this thread's own, or None."""
        with self.changed:
            while not request.done:
                self.changed.wait()
        error = request.error
        if error is None:
            return None
        if isinstance(error, OSError):
            return OSError(error.errno, error.strerror, error.filename)
        return RuntimeError(f"fsync of {self.path} failed: {error!r}")


class Publishing:
    """`publish(staged, key)` running on a thread of its own, begun before the caller
    knows that it will index the file: its fsyncs (and on the object store its PUT) wait
    on the disk or the network while the caller reads the dataset's tags. The caller
    either indexes the file and takes its `result()` before answering, or `abandon()`s it,
    which removes the name it made unless an identical re-send indexed it meanwhile. An
    index row may be written once `linked()` has returned, before `result()`, only together
    with its UnsyncedFile row (see cloudpacs.services._store): the file is whole at its key
    by then, durable only after."""

    def __init__(self, staged: StagedFile, key: str) -> None:
        self.staged = staged
        self.key = key
        self.settled = False
        self._linked: Future[bool] = Future()
        self._future: Future[bool] = _pool(_PUBLISHING).submit(publish, staged, key, self._linked.set_result)

    def result(self) -> bool:
        """What `publish` returned, or what it raised, once it has finished."""
        self.settled = True
        return self._future.result()

    def linked(self) -> bool:
        """Whether the name is new, once the file has it (its fsyncs may still be under
        way: `result()` waits for them), or what `publish` raised before that."""
        if not self._linked.done():
            wait([self._linked, self._future], return_when=FIRST_COMPLETED)
        if self._linked.done():
            return self._linked.result()
        return self._future.result()

    def abandon(self, is_indexed: Callable[[Iterable[str]], set[str]]) -> None:
        """Wait for it, then remove the name it made (or a link to the staged file it
        left on failure) unless the index points at it: nothing will index it here, but
        an identical re-send may have (see remove_unindexed). Never raises."""
        if self.settled:
            return
        self.settled = True
        try:
            created = self._future.result()
        except Exception:
            # Only a name that is a link to the staged file may go (as in
            # cloudpacs.services): an existing one may be indexed.
            with contextlib.suppress(Exception):
                if _object_store() is None and path_for(self.key).samefile(self.staged.path):
                    remove_unindexed(self.key, is_indexed)
            return
        if created:
            remove_unindexed(self.key, is_indexed)


def publish_ahead(staged: StagedFile, key: str) -> Publishing:
    """Begin `publish(staged, key)` on another thread (see Publishing)."""
    return Publishing(staged, key)


# Threads that wait on the disk (fsync) or the object store (PUT), which release the
# GIL: one per association in flight is enough, more wait their turn. Two pools, so that
# a publish waiting for its directory's fsync never waits for a thread held by another
# publish: a directory's fsync waits on nothing else.
_PUBLISHING = "publish"
_SYNCING = "fsync-directory"
POOL_THREADS = 16
_pools_lock = threading.Lock()
_pools: dict[str, ThreadPoolExecutor] = {}


def _pool(name: str) -> ThreadPoolExecutor:
    pool = _pools.get(name)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(name)
            if pool is None:
                pool = _pools[name] = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix=name)
    return pool


def _forget_pools() -> None:
    # A forked child (a receiver worker process) has none of its parent's threads.
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()
    _DirectorySync.active = {}
    _DirectorySync.lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _fsync_file(path: Path, fd: int = -1) -> None:
    """fsync the file at `path`, through `fd` when the caller holds a descriptor of that
    file (an fsync syncs the file, whichever descriptor asks)."""
    if fd >= 0:
        os.fsync(fd)
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_key(key: str) -> None:
    """Make a stored file and its name durable now (its fsync and its directory's): for a
    file found at the next start whose fsync may never have returned. Nothing to do on the
    object store, which acknowledged the PUT before anything was indexed."""
    if _object_store() is not None:
        return
    final = path_for(key)
    _fsync_file(final)
    _fsync_dir(final.parent)


def discard(staged: StagedFile) -> None:
    staged.path.unlink(missing_ok=True)
    if staged.lock >= 0:
        with contextlib.suppress(OSError):
            os.close(staged.lock)


@contextlib.contextmanager
def _study_directory_lock(key: str, *, exclusive: bool) -> Iterator[None]:
    """A flock on the directory that holds the key's file (a study's files share one),
    across threads and processes: removing a name the index may point at (exclusive)
    against keeping one that an index row now points at (shared). Files of other studies
    never wait for it."""
    directory = path_for(key).parent
    _ensure_dir(directory)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def remove_unindexed(key: str, is_indexed: Callable[[Iterable[str]], set[str]]) -> bool:
    """Remove the file at `key` that the caller made (publish returned True) and then did
    not index (refused, or its index write failed), unless the index points at it: the
    same study, SOP Instance UID and content from another association land on the same
    key, find the name there (publish returns False for them) and may have indexed it
    meanwhile. On local disk the check and the removal hold the study directory's lock
    exclusively, and `keep_published` holds it shared after the other's commit, so the
    name is either kept for a committed row or put back by the other before it answers.
    On the object store the check comes right before the DELETE and `keep_published`
    PUTs again what is gone, which narrows the window without a lock across nodes.
    Returns whether it removed the file. Never raises: a file kept on an error is left to
    the orphan sweep (manage.py storage_verify --orphans)."""
    try:
        if _object_store() is not None:
            if key in is_indexed([key]):
                return False
            remove_key(key)
            return True
        with _study_directory_lock(key, exclusive=True):
            if key in is_indexed([key]):
                return False
            remove_key(key)
            return True
    except Exception:
        logger.warning("kept %s, not known to be unindexed (left to the orphan sweep)", key, exc_info=True)
        return False


def keep_published(staged: StagedFile, key: str) -> None:
    """For a caller whose `publish` found the name there already (returned False) and
    whose index row pointing at it is committed, before it answers and before the staged
    file goes: the name is still there, or it is put back from the staged file (made
    durable as publish does). Another caller that had made the name and then refused its
    own instance may have removed it between this caller's publish and its commit (see
    remove_unindexed)."""
    store = _object_store()
    if store is not None:
        if not store.exists(key):
            logger.warning("%s was removed while its index row was written: stored again", key)
            store.put_file(staged.path, key, staged.sha256)
        return
    with _study_directory_lock(key, exclusive=False):
        final = path_for(key)
        if final.exists():
            return
        logger.warning("%s was removed while its index row was written: linked again", key)
        os.link(staged.path, final)
        _sync_with_directory(final)


def remove_key(key: str) -> None:
    """Remove a stored file that the index does not point at. On the object store, a
    DELETE that fails is logged and left to the orphan sweep: this runs on failure paths,
    where raising would hide the failure being handled."""
    store = _object_store()
    if store is None:
        path_for(key).unlink(missing_ok=True)
        return
    try:
        store.delete(key)
    except StoreUnavailable as exc:
        logger.warning("could not remove %s from the object store (left to the orphan sweep): %s", key, exc)


# --- Reading ----------------------------------------------------------------------------


def exists(key: str) -> bool:
    store = _object_store()
    return store.exists(key) if store is not None else path_for(key).is_file()


def size_of(key: str) -> int:
    store = _object_store()
    return store.size(key) if store is not None else path_for(key).stat().st_size


def open_key(key: str) -> BinaryIO:
    """The stored file as a read-only, seekable binary file: what pydicom reads. On the
    object store each read beyond the reader's window is a ranged GET, so opening an
    instance to read its header or one frame never fetches the rest. Raises
    FileNotFoundError when the file is not there, StoreUnavailable when the store is
    unreachable."""
    store = _object_store()
    if store is not None:
        return store.open(key)  # type: ignore[return-value]
    return open(path_for(key), "rb")


def iter_key(key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The stored file's bytes in order, a chunk at a time (one streamed GET)."""
    store = _object_store()
    if store is not None:
        yield from store.iter_chunks(key, chunk_size)
        return
    with open(path_for(key), "rb") as stream:
        while chunk := stream.read(chunk_size):
            yield chunk


def dataset_sha256(key: str) -> tuple[str, int]:
    """(SHA-256 of the dataset bytes, size of the whole file) of a stored file, read as a
    stream: what the index's `sha256` and `size` say it should be."""
    digest = hashlib.sha256()
    head = b""
    offset: int | None = None
    size = 0
    for chunk in iter_key(key):
        size += len(chunk)
        if offset is None:
            head += chunk
            if len(head) < 4096 and size < 4096:
                continue
            offset = part10_dataset_offset(head) or 0
            digest.update(head[offset:])
            head = b""
            continue
        digest.update(chunk)
    if offset is None:
        offset = part10_dataset_offset(head) or 0
        digest.update(head[offset:])
    return digest.hexdigest(), size


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float  # seconds since the epoch


def stored_objects() -> Iterator[StoredObject]:
    """Every stored file (not the spool), in key order on the object store and in
    directory order on disk."""
    store = _object_store()
    if store is not None:
        for key, size, modified in store.objects():
            yield StoredObject(key, size, modified)
        return
    base = root()
    for directory, subdirectories, files in os.walk(base):
        # The spool (.incoming) and the commands' checkpoints (.commands) are not stored files.
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            with contextlib.suppress(OSError):
                stat = path.stat()
                yield StoredObject(path.relative_to(base).as_posix(), stat.st_size, stat.st_mtime)


def sweep_unindexed(is_indexed: Callable[[Iterable[str]], set[str]], older_than: float, *, remove: bool) -> list[str]:
    """Stored files the index does not know and that are older than `older_than`
    seconds: what a PUT that timed out after the store had taken it, or a node lost
    with its spool, leaves. Listed, and removed with `remove`. The age keeps it off files
    whose index row is being written right now."""
    cutoff = time.time() - older_than
    found: list[str] = []
    batch: list[StoredObject] = []

    def settle() -> None:
        known = is_indexed(item.key for item in batch)
        for item in batch:
            if item.key not in known and item.modified < cutoff:
                found.append(item.key)
                # Checked again under the study directory's lock: a re-send of the same
                # content may be indexing this key right now.
                if remove and remove_unindexed(item.key, is_indexed):
                    logger.warning("removed unindexed stored file %s", item.key)
        batch.clear()

    for item in stored_objects():
        batch.append(item)
        if len(batch) >= 500:
            settle()
    if batch:
        settle()
    return found


def _staged_identity(path: Path) -> tuple[str, str, str] | None:
    """(Study UID, SOP Instance UID, dataset SHA-256) of a file in `.incoming/`, or None."""
    from pydicom import dcmread

    try:
        ds = dcmread(path, specific_tags=["StudyInstanceUID", "SOPInstanceUID"], defer_size=1024)
        with open(path, "rb") as stream:
            offset = part10_dataset_offset(stream.read(4096))
            if offset is None:
                return None
            sha256 = _digest_from(stream, offset)
        return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), sha256
    except Exception:
        return None


def sweep_orphans(is_indexed: Callable[[Iterable[str]], set[str]]) -> int:
    """Resolve what a crash left in `.incoming/`. `is_indexed` returns which of the given
    keys the index knows. A final file whose key is not indexed is removed with its
    temporary; an indexed one is kept. Returns the number of files removed."""
    removed = 0
    directory = incoming_dir()
    candidates: dict[str, Path] = {}
    locks: list[int] = []
    try:
        for path in directory.iterdir():
            if not path.is_file():
                continue
            lock = _lock_if_free(path)
            if lock is None:
                # Staged by a live process (the web server's STOW-RS, say): not a crash's.
                continue
            locks.append(lock)
            identity = _staged_identity(path) if path.suffix == ".part" else None
            if identity is not None:
                candidates[key_for(*identity)] = path
            else:
                path.unlink(missing_ok=True)
                removed += 1
        known = is_indexed(candidates.keys()) if candidates else set()
        for key, path in candidates.items():
            try:
                if key not in known and exists(key) and remove_unindexed(key, is_indexed):
                    removed += 1
                    logger.warning("removed unindexed file %s left by an interrupted store", key)
            except StoreUnavailable as exc:
                # The spool file stays, so that the next start resolves it.
                logger.warning("object store unavailable, %s left in the spool: %s", path.name, exc)
                continue
            path.unlink(missing_ok=True)
            removed += 1
    finally:
        for lock in locks:
            os.close(lock)
    if removed:
        _fsync_dir(directory)
    return removed


def _lock_if_free(path: Path) -> int | None:
    """A descriptor holding the file's exclusive flock, or None when another process holds
    it (or the file went meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


# --- Moving an archive between backends ------------------------------------------------


def copy_key(key: str, source: str, destination: str) -> bool:
    """Copy one stored file from backend `source` to `destination` ("local" or "s3") under
    the same key, durably; returns False when the destination had it already (with the
    same size). The index names files by key alone, so it needs no change when STORAGE_BACKEND
    is switched after every key has been copied."""
    if source == destination:
        raise ValueError("source and destination are the same backend")
    if destination == "s3":
        store = s3_store()
        with contextlib.suppress(FileNotFoundError):
            if store.size(key) == path_for(key).stat().st_size:
                return False
        store.put_file(path_for(key), key)
        return True
    final = path_for(key)
    store = s3_store()
    if final.is_file() and final.stat().st_size == store.size(key):
        return False
    temp = incoming_dir() / f"{uuid.uuid4().hex}.copy"
    # Locked from its creation to its rename, as a staged file is: the start-up sweep of a
    # receiver (sweep_orphans) passes over it instead of taking it for a crash's.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    lock = -1
    try:
        with os.fdopen(fd, "wb") as out:
            lock = _locked(temp)
            for chunk in store.iter_chunks(key):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _ensure_dir(final.parent)
        os.replace(temp, final)
        _fsync_dir(final.parent)
    finally:
        temp.unlink(missing_ok=True)
        if lock >= 0:
            os.close(lock)
    return True
