"""multipart/related framing (RFC 2387, PS3.18 8.6.1.2): writing parts lazily for
retrieve responses, and reading an upload part by part without holding it in memory."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

CHUNK = 1024 * 1024
CRLF = b"\r\n"


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return f"{value}; boundary={boundary}"


@dataclass(frozen=True)
class OutPart:
    """One part of a response: its Content-Type and either bytes, a file to stream, or
    chunks to stream (a stored file's, `cloudpacs.storage.iter_key`, read as sent)."""

    content_type: str
    data: bytes | None = None
    path: Path | None = None
    location: str = ""
    chunks: Iterable[bytes] | None = None
    # Sent as the part's Content-Length when set: a reader can then step over the part
    # without searching its bytes for the boundary (RFC 2046 allows any header in a part).
    length: int | None = None


def _head(boundary: str, part: OutPart) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {part.content_type}"]
    if part.location:
        lines.append(f"Content-Location: {part.location}")
    if part.length is not None:
        lines.append(f"Content-Length: {part.length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def stream(parts: Iterable[OutPart], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related response. Files are read in chunks as the client
    takes them, so retrieving a whole study never holds more than one chunk."""
    for part in parts:
        yield _head(boundary, part)
        if part.data is not None:
            yield part.data
        elif part.chunks is not None:
            yield from part.chunks
        elif part.path is not None:
            with open(part.path, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        yield CRLF
    yield f"--{boundary}--\r\n".encode("ascii")


def encode(parts: Iterable[OutPart], boundary: str) -> bytes:
    return b"".join(stream(parts, boundary))


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; a=b; c="d"` -> ("type/subtype", {"a": "b", "c": "d"}), lower-cased
    names, unquoted values (a quoted value may hold ';' and ',', as boundaries may)."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    media_type = pieces[0].strip().lower()
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, _, raw = piece.partition("=")
        if name.strip():
            params[name.strip().lower()] = raw.strip().strip('"')
    return media_type, params


@dataclass
class InPart:
    headers: dict[str, str]
    file: IO[bytes]
    size: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class MultipartError(ValueError):
    """The body is not a well-formed multipart/related message."""


def read_parts(source: BinaryIO, boundary: str, spool_dir: Path | None = None) -> Iterator[InPart]:
    """Each part of `source` in turn, its body spooled to a temporary file (kept in memory
    while small). The caller closes each part's file."""
    delimiter = b"\r\n--" + boundary.encode("ascii")
    # A body may start with the boundary line itself, without the leading CRLF.
    buffer = CRLF + _read(source)
    start = buffer.find(delimiter)
    while start < 0:
        more = _read(source)
        if not more:
            raise MultipartError("no boundary found in the body")
        keep = max(0, len(buffer) - len(delimiter))
        buffer = buffer[keep:] + more
        start = buffer.find(delimiter)
    buffer = buffer[start + len(delimiter) :]
    while True:
        while len(buffer) < 2:
            more = _read(source)
            if not more:
                raise MultipartError("the body ends inside a boundary line")
            buffer += more
        if buffer.startswith(b"--"):
            return
        end_of_headers = buffer.find(b"\r\n\r\n")
        while end_of_headers < 0:
            more = _read(source)
            if not more:
                raise MultipartError("the body ends inside a part's headers")
            buffer += more
            end_of_headers = buffer.find(b"\r\n\r\n")
            if len(buffer) > 64 * 1024 and end_of_headers < 0:
                raise MultipartError("a part's headers are too long")
        header_block = buffer[:end_of_headers].decode("latin-1")
        buffer = buffer[end_of_headers + 4 :]
        headers: dict[str, str] = {}
        for line in header_block.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        spool = tempfile.SpooledTemporaryFile(max_size=CHUNK, dir=str(spool_dir) if spool_dir else None)  # noqa: SIM115
        size = 0
        while True:
            found = buffer.find(delimiter)
            if found >= 0:
                spool.write(buffer[:found])
                size += found
                buffer = buffer[found + len(delimiter) :]
                break
            # Keep what could be the start of a delimiter split across reads.
            safe = max(0, len(buffer) - len(delimiter))
            spool.write(buffer[:safe])
            size += safe
            buffer = buffer[safe:]
            more = _read(source)
            if not more:
                spool.close()
                raise MultipartError("the body ends inside a part")
            buffer += more
        spool.seek(0)
        yield InPart(headers=headers, file=spool, size=size)  # type: ignore[arg-type]


def _read(source: BinaryIO) -> bytes:
    return source.read(CHUNK) or b""
