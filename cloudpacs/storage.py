"""The image store: DICOM Part 10 files under STORAGE_ROOT, written durably.

A received dataset is put into `.incoming/` as a Part 10 file (preamble, a file meta
group built for it, then the dataset bytes exactly as received), linked to its final
key, and fsynced with its directory; the index row comes after that, in the caller's
transaction, and only then is the `.incoming/` name dropped. A crash at any step leaves
a file in `.incoming/`, which `sweep_orphans()` resolves at the next start: if its key
was never indexed, both the temporary and the final file go. Keys are derived from the
UIDs and the dataset's SHA-256, so an identical re-send lands on the same key and a
conflicting one on a different key, never overwriting what the index points at.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

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


def root() -> Path:
    return Path(settings.STORAGE_ROOT)


_ensured: set[Path] = set()


def incoming_dir() -> Path:
    path = root() / INCOMING
    if path not in _ensured or not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        _ensured.add(path)
    return path


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
    temp = incoming_dir() / f"{uuid.uuid4().hex}.part"
    if adopt and isinstance(source, str | os.PathLike):
        adopted = _adopt(Path(source), temp, sha256)
        if adopted is not None:
            return adopted
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
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
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
            raise
    finally:
        if opened:
            stream.close()
    return StagedFile(path=temp, sha256=digest.hexdigest(), size=size, dataset_offset=len(PREAMBLE) + len(meta))


def _adopt(source: Path, temp: Path, sha256: str | None = None) -> StagedFile | None:
    """Move `source` to `temp`. `sha256` is the dataset's digest when the caller computed
    it from the bytes it wrote there (the receiver, as they arrived)."""
    try:
        if source.stat().st_dev != temp.parent.stat().st_dev:
            return None
        with open(source, "rb") as stream:
            offset = part10_dataset_offset(stream.read(4096))
            if offset is None:
                return None
        os.rename(source, temp)
    except OSError:
        return None
    if sha256 is None:
        with open(temp, "rb") as stream:
            sha256 = _digest_from(stream, offset)
    return StagedFile(path=temp, sha256=sha256, size=temp.stat().st_size, dataset_offset=offset)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    if path.is_dir():
        return
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    path.mkdir(parents=True, exist_ok=True)
    # A new directory entry is only durable once its parent is synced.
    for created in reversed(missing):
        _fsync_dir(created.parent)


def publish(staged: StagedFile, key: str) -> bool:
    """Give the staged file its final name (a hard link, so that `.incoming/` still holds
    it until the index commits), then make its content and its name durable. Returns
    whether the name is new: when it is not, the same UID with the same content is there
    already (a re-send, or a file left by a crash), and the caller must not remove it."""
    final = path_for(key)
    _ensure_dir(final.parent)
    created = True
    try:
        os.link(staged.path, final)
    except FileExistsError:
        created = False
    # The data first, then the directory entry; on ext4 the first fsync commits the
    # journal that holds the new entry too, which makes the second one cheap.
    fd = os.open(final, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(final.parent)
    return created


def discard(staged: StagedFile) -> None:
    staged.path.unlink(missing_ok=True)


def remove_key(key: str) -> None:
    path_for(key).unlink(missing_ok=True)


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
    for path in directory.iterdir():
        if not path.is_file():
            continue
        identity = _staged_identity(path) if path.suffix == ".part" else None
        if identity is not None:
            candidates[key_for(*identity)] = path
        else:
            path.unlink(missing_ok=True)
            removed += 1
    known = is_indexed(candidates.keys()) if candidates else set()
    for key, path in candidates.items():
        if key not in known and path_for(key).exists():
            remove_key(key)
            removed += 1
            logger.warning("removed unindexed file %s left by an interrupted store", key)
        path.unlink(missing_ok=True)
        removed += 1
    if removed:
        _fsync_dir(directory)
    return removed
