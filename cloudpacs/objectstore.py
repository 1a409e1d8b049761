"""The image store in an S3-compatible object store (MinIO, Ceph RADOS Gateway, Alibaba
OSS, AWS S3) through boto3. Only `cloudpacs.storage` uses this module: everything else
reads and writes the store through that module's functions.

An object is written by one PUT of a file that is already complete on the receiving
node's spool (`STORAGE_ROOT/.incoming/`); a PUT acknowledged by the store is durable
there. Reads are ranged GETs: a reader keeps one window of the object (READ_WINDOW bytes)
and fetches another only when a seek leaves it, so parsing a header costs one request and
a frame one or two, and nothing holds a whole study, or a whole instance, in memory.
Every failure to reach the store (refused connection, timeout, a 5xx or a refusal such as
403) is raised as StoreUnavailable; a missing object as FileNotFoundError.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A window of 256 KiB holds a CT slice's header and most of its 512 KiB frame in two
# requests; larger windows waste transfer on a seek that leaves them early.
READ_WINDOW = 256 * 1024
STREAM_CHUNK = 1024 * 1024
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class StoreUnavailable(OSError):
    """The object store could not be reached, was too slow, or refused the request."""


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    addressing_style: str = "path"
    timeout: float = 10.0
    max_attempts: int = 3
    ca_bundle: str | None = None


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return str(error.get("Code", "")) in _MISSING_CODES or status == "404"


class S3Store:
    """One bucket (and key prefix) of an S3-compatible store. Thread-safe: a boto3 client
    may be shared between threads, and each process makes its own (after a fork)."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._client: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()

    # --- plumbing -----------------------------------------------------------------

    @property
    def client(self) -> Any:
        import os

        pid = os.getpid()
        if self._client is None or self._client_pid != pid:
            with self._lock:
                if self._client is None or self._client_pid != pid:
                    self._client = self._make_client()
                    self._client_pid = pid
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = self.config
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            verify=config.ca_bundle if config.ca_bundle else None,
            config=Config(
                connect_timeout=config.timeout,
                read_timeout=config.timeout,
                retries={"max_attempts": config.max_attempts, "mode": "standard"},
                s3={"addressing_style": config.addressing_style},
                # The receiver's association threads share this client.
                max_pool_connections=64,
                # Checksums only where the operation requires them: a ranged GET cannot
                # be checked against a whole object's checksum, and some S3-compatible
                # stores reject the newer trailing-checksum uploads.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def name(self, key: str) -> str:
        return f"{self.config.prefix}{key}"

    def _call(self, operation: str, key: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.config.bucket, Key=self.name(key), **kwargs)
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"no object {key} in the store") from exc
            raise StoreUnavailable(f"the object store refused {operation} of {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"the object store is unreachable ({operation} {key}): {exc}") from exc

    # --- writes -------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._call("head_object", key)["ContentLength"])

    def put_file(self, path: Path, key: str, sha256: str = "") -> None:
        """PUT the file at `path` as `key` and return once the store acknowledged it.
        The body goes with its MD5 (Content-MD5), so the store refuses a corrupted one."""
        import base64
        import hashlib

        md5 = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as stream:
            while chunk := stream.read(STREAM_CHUNK):
                md5.update(chunk)
            stream.seek(0)
            extra: dict[str, Any] = {"ContentMD5": base64.b64encode(md5.digest()).decode("ascii")}
            if sha256:
                extra["Metadata"] = {"dataset-sha256": sha256}
            self._call("put_object", key, Body=stream, ContentType="application/dicom", **extra)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("delete_object", key)

    # --- reads --------------------------------------------------------------------

    def open(self, key: str) -> RangeReader:
        return RangeReader(self, key)

    def iter_chunks(self, key: str, chunk_size: int = STREAM_CHUNK) -> Iterator[bytes]:
        """The object's bytes in order, from one streamed GET."""
        from botocore.exceptions import BotoCoreError

        body = self._call("get_object", key)["Body"]
        try:
            while True:
                try:
                    chunk = body.read(chunk_size)
                except (BotoCoreError, OSError) as exc:
                    raise StoreUnavailable(f"the object store stopped sending {key}: {exc}") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def get_range(self, key: str, start: int, end: int) -> tuple[bytes, int]:
        """Bytes start..end (inclusive) and the object's whole size."""
        from botocore.exceptions import BotoCoreError

        response = self._call("get_object", key, Range=f"bytes={start}-{end}")
        try:
            data = response["Body"].read()
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"the object store stopped sending {key}: {exc}") from exc
        total = response.get("ContentRange", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else start + len(data)
        return data, size

    def objects(self) -> Iterator[tuple[str, int, float]]:
        """(key, size, last modified as seconds since the epoch) of every object under
        the prefix, in key order."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        prefix = self.config.prefix
        try:
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(prefix) :], int(item["Size"]), item["LastModified"].timestamp()
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"the object store cannot list {self.config.bucket}: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket if it is not there (tests and a first installation)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.config.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.config.bucket)


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over one object, read by ranged GETs: what pydicom's
    dcmread and pixel readers are given instead of a file. Reads are served from one
    window; a read past it fetches the next window (or exactly what a large read asks)."""

    def __init__(self, store: S3Store, key: str) -> None:
        super().__init__()
        self.store = store
        self.key = key
        self.name = key
        self._pos = 0
        self._window = b""
        self._window_start = 0
        # The first window tells the size, and that the object exists.
        self._fetch(0, READ_WINDOW)

    def _fetch(self, start: int, length: int) -> None:
        self._window, self._size = self.store.get_range(self.key, start, start + max(length, 1) - 1)
        self._window_start = start

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise OSError("negative seek position")
        self._pos = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed object")
        remaining = self._size - self._pos
        if remaining <= 0:
            return b""
        wanted = remaining if size is None or size < 0 else min(size, remaining)
        out = bytearray()
        while len(out) < wanted:
            offset = self._pos - self._window_start
            if 0 <= offset < len(self._window):
                piece = self._window[offset : offset + wanted - len(out)]
                out += piece
                self._pos += len(piece)
                continue
            self._fetch(self._pos, max(READ_WINDOW, wanted - len(out)))
            if not self._window:
                break
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)
