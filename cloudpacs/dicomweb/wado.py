"""WADO-RS (PS3.18 10.4): instances as stored, frames, bulk data and the media type
negotiation that decides between sending what is stored and decoding it.

The archive keeps each file exactly as received. A retrieve sends those bytes unless the
client asks for a transfer syntax they are not in; the only conversion offered is to
Explicit VR Little Endian (decompression), which every client can read."""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.encaps import generate_fragments, get_frame
from pydicom.uid import UID, AllTransferSyntaxes, ExplicitVRLittleEndian, MPEGTransferSyntaxes

from cloudpacs.dicomweb import rendering
from cloudpacs.dicomweb.http import MediaRange, not_acceptable
from cloudpacs.queryretrieve import as_little_endian

logger = logging.getLogger("cloudpacs.dicomweb")

EXPLICIT_LE = str(ExplicitVRLittleEndian)
OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"
PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}
BIG_ENDIAN = "1.2.840.10008.1.2.2"

# Bulk data media types of the compressed transfer syntaxes (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}


# Video is kept as the one bit stream it arrived as; it has no frames to send one by one,
# only its pixel data, whole, as bulk data in its video media type (PS3.18 8.7.3.5.2).
VIDEO_MEDIA_TYPES = {
    str(syntax): "video/mpeg"
    if syntax.startswith(("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"))
    else "video/mp4"
    for syntax in MPEGTransferSyntaxes
}


# Encapsulated syntaxes whose frames are read through the offset table without parsing
# the rest of the pixel data: every one but video (one bit stream, not frames).
ENCAPSULATED_SEEKABLE = {
    str(syntax)
    for syntax in AllTransferSyntaxes
    if UID(syntax).is_encapsulated and str(syntax) not in VIDEO_MEDIA_TYPES
}


def frame_media_type(transfer_syntax: str) -> str:
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


def is_video(transfer_syntax: str) -> bool:
    return transfer_syntax in VIDEO_MEDIA_TYPES


# --- Instances ------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceChoice:
    """How to send instances: as stored (transfer_syntax None) or converted to it, in a
    multipart/related body or, for one instance asked for as application/dicom, alone."""

    transfer_syntax: str | None
    single_part: bool = False


def choose_instance_syntax(ranges: list[MediaRange], stored: set[str], *, one: bool = False) -> InstanceChoice:
    """For Accept: multipart/related; type="application/dicom"[; transfer-syntax=...], or
    application/dicom alone for `one` instance (PS3.18 Table 10.4.4-1: a single part media
    type is for a resource of one item; a study or series ignores it, and is 406 when
    nothing else is acceptable).

    No transfer-syntax, or '*', sends the files as stored: PS3.18 names Explicit VR Little
    Endian as the default, but decompressing a whole study to send it is what a client
    that wants that should ask for, and the stored bytes are what every client reads."""
    for item in ranges:
        single_part = item.media_type == DICOM
        if single_part and not one:
            continue
        if not item.matches(DICOM):
            continue
        wanted = item.transfer_syntax
        if wanted in (None, "*") or stored <= {wanted}:
            return InstanceChoice(None, single_part)
        if wanted == EXPLICIT_LE:
            return InstanceChoice(EXPLICIT_LE, single_part)
    raise not_acceptable(
        'instances are sent as multipart/related; type="application/dicom"'
        + (", or one alone as application/dicom" if one else "")
    )


Source = Path | BinaryIO


@contextmanager
def _opened(source: Source) -> Iterator[BinaryIO]:
    """A stored file as a binary stream: opened here from a path, or the stream the
    caller opened (`cloudpacs.storage.open_key`, ranged GETs on an object store)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as stream:
            yield stream
    else:
        source.seek(0)
        yield source


def converted_instance(source: Source, transfer_syntax: str) -> bytes:
    """The instance re-encoded as Explicit VR Little Endian (decompressed if need be)."""
    with _opened(source) as stream:
        ds = dcmread(stream)
        if ds.file_meta.TransferSyntaxUID == transfer_syntax:
            stream.seek(0)
            return stream.read()
    if UID(ds.file_meta.TransferSyntaxUID).is_compressed:
        ds.decompress()
    # Big endian too: save_as() refuses to change the byte order, and would not swap the
    # binary values (as_little_endian does).
    as_little_endian(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


# --- Frames ---------------------------------------------------------------------


@dataclass(frozen=True)
class FrameChoice:
    media_type: str
    transfer_syntax: str
    decode: bool


def choose_frame_syntax(ranges: list[MediaRange], stored: str) -> FrameChoice:
    """Frames as stored when the Accept header allows them, else decoded to native
    little endian when it asks for application/octet-stream with Explicit VR Little
    Endian (or with no transfer-syntax, whose default that is); otherwise 406."""
    if is_video(stored):
        raise not_acceptable(
            f"this instance is a video ({VIDEO_MEDIA_TYPES[stored]}): retrieve its pixel data whole, as bulk data"
        )
    native = stored in NATIVE_LE
    # Big endian frames are application/octet-stream too, but not in the syntax that media
    # type means without a transfer-syntax parameter (Explicit VR Little Endian): they are
    # sent as stored only when asked for by their syntax or '*', else byte-swapped.
    big_endian = stored == BIG_ENDIAN
    stored_type = frame_media_type(stored)
    as_stored = FrameChoice(stored_type, EXPLICIT_LE if native else stored, decode=False)
    decoded = FrameChoice(OCTET_STREAM, EXPLICIT_LE, decode=not native)
    for item in ranges:
        wanted = item.transfer_syntax
        if item.part_type in {"*/*", "*"}:
            if wanted == "*" or (wanted is None and not big_endian):
                return as_stored
            if wanted in (None, EXPLICIT_LE):
                return decoded
            continue
        by_default = wanted is None and not big_endian
        if item.matches(stored_type) and (by_default or wanted in ("*", as_stored.transfer_syntax)):
            return as_stored
        if item.matches(OCTET_STREAM):
            if wanted == "*":
                return as_stored
            if wanted in (None, EXPLICIT_LE):
                return decoded
    raise not_acceptable(f"frames are stored as {stored_type} (transfer syntax {stored})")


class CannotDecode(Exception):
    """The frames were asked for decoded and cannot be: the client may take them as stored."""


def frames(source: Source, numbers: list[int], decode: bool, cache_key: str | None = None) -> list[bytes]:
    """The bytes of the frames `numbers` (1-based): as stored, or decoded to native
    little endian pixel data. As stored, only the frames' own bytes are read (native
    pixel data at their offsets, encapsulated frames through the offset table), which on
    an object store are ranged GETs; decoding reads the instance."""
    with _opened(source) as stream:
        if not decode:
            found = _stored_frames(stream, numbers, cache_key)
            if found is not None:
                return found
            stream.seek(0)
        ds = dcmread(stream)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if "PixelData" not in ds:
        raise LookupError("the instance has no pixel data")
    for number in numbers:
        if not 1 <= number <= count:
            raise LookupError(f"frame {number} is outside 1..{count}")
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if decode:
        out = []
        for number in numbers:
            try:
                arr = rendering.decoded_frame(ds, number - 1)
            except rendering.CannotDecode as exc:  # no plugin decodes it, or the codestream is damaged
                raise CannotDecode(str(exc).removeprefix("cannot decode the pixel data: ")) from exc
            out.append(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return out
    data = ds.PixelData
    if transfer_syntax.is_encapsulated:
        return [get_frame(data, number - 1, number_of_frames=count) for number in numbers]
    bits = _frame_bits(ds)
    if bits % 8:
        return [_bit_frame(data, number - 1, bits) for number in numbers]
    length = _native_frame_length(ds)
    return [bytes(data[(number - 1) * length : number * length]) for number in numbers]


def _bit_frame(data: bytes, index: int, bits: int) -> bytes:
    """Frame `index` of single-bit pixel data whose frames do not end on a byte boundary
    (the frames are packed one after another, PS3.5 8.1.1): its bits moved to start at a
    byte of their own, the last byte's unused high bits zero (PS3.18 8.7.3.3.1)."""
    start = index * bits
    first, last = start // 8, (start + bits + 7) // 8
    unpacked = np.unpackbits(np.frombuffer(data[first:last], dtype=np.uint8), bitorder="little")
    shift = start - first * 8
    return np.packbits(unpacked[shift : shift + bits], bitorder="little").tobytes()


def _stored_frames(stream: BinaryIO, numbers: list[int], cache_key: str | None = None) -> list[bytes] | None:
    """Frames as stored, read straight from the file at their offsets: native (uncompressed,
    not deflated) frames by their length, encapsulated ones by the fragments that make
    them. None for any other encoding, which frames() then reads the general way.

    Where the frames lie is worked out once per stored file (`frame_map`) and kept by
    `cache_key` (the storage key, which names the file's content): a frame then costs one
    read at its offset, which on an object store is one ranged GET, instead of parsing the
    header and walking the fragments before it again (a cine loop of 100 frames without
    an offset table cost a walk per frame)."""
    found = _FRAME_MAPS.get(cache_key) if cache_key else None
    if found is None:
        found = frame_map(stream)
        if cache_key:
            _FRAME_MAPS.put(cache_key, found)
    if found is NOT_MAPPABLE:
        return None
    assert isinstance(found, FrameMap)
    count = len(found.pieces)
    for number in numbers:
        if not 1 <= number <= count:
            raise LookupError(f"frame {number} is outside 1..{count}")
    out = []
    for number in numbers:
        parts = []
        for offset, length in found.pieces[number - 1]:
            stream.seek(offset)
            data = stream.read(length) if offset + length <= found.end else b""
            if len(data) != length:
                raise LookupError(f"frame {number} is not all in the file")
            parts.append(data)
        out.append(b"".join(parts))
    return out


@dataclass(frozen=True)
class FrameMap:
    """Where each frame's bytes lie in a stored file: per frame, the (offset, length) of
    each piece, in order (one piece for native frames and for most encapsulated ones)."""

    pieces: tuple[tuple[tuple[int, int], ...], ...]
    # Where the pixel data ends in the file: a piece past it is not in the file.
    end: int


class _NotMappable:
    """frame_map's answer for a file whose frames are read the general way."""


NOT_MAPPABLE = _NotMappable()
# The largest encapsulated pixel data walked in memory for its fragments (one read; on an
# object store one ranged GET). Larger ones are read the general way.
MAX_WALKED_BYTES = 256 * 1024 * 1024
ITEM = (0xFFFE, 0xE000)
SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)


def frame_map(stream: BinaryIO) -> FrameMap | _NotMappable:
    """Where the frames of the file in `stream` lie. The dataset is parsed up to its pixel
    data and no further (pydicom would walk every fragment to find the end of encapsulated
    data; on an object store a ranged GET per window); the Pixel Data element's header is
    read here. Raises LookupError for a file without pixel data."""
    stream.seek(0)
    ds = dcmread(stream, stop_before_pixels=True)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if syntax not in ENCAPSULATED_SEEKABLE and syntax not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
        # Big endian, or deflated: a deflated file's position after its header is in the
        # compressed stream (pydicom may have read it to the end), not at the pixel data.
        return NOT_MAPPABLE
    start = stream.tell()
    header = stream.read(12)
    if len(header) < 8:
        raise LookupError("the instance has no pixel data")
    if struct.unpack_from("<HH", header) != (0x7FE0, 0x0010) or "Rows" not in ds:
        return NOT_MAPPABLE  # float pixel data, or an image without its size: the general way
    if syntax == "1.2.840.10008.1.2":
        (length,), offset = struct.unpack_from("<I", header, 4), start + 8
    else:
        if len(header) < 12 or header[4:6] not in (b"OB", b"OW"):
            return NOT_MAPPABLE
        (length,), offset = struct.unpack_from("<I", header, 8), start + 12
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if syntax in ENCAPSULATED_SEEKABLE:
        return (_encapsulated_map(stream, offset, count) if length == UNDEFINED_LENGTH else None) or NOT_MAPPABLE
    if length == UNDEFINED_LENGTH or _frame_bits(ds) % 8:
        # Single-bit frames that do not end on a byte boundary: the general way cuts them.
        return NOT_MAPPABLE
    size = _native_frame_length(ds)
    # A frame past the element's end is mapped all the same: reading it finds it missing.
    return FrameMap(tuple(((offset + index * size, size),) for index in range(count)), end=offset + length)


def _encapsulated_map(stream: BinaryIO, offset: int, count: int) -> FrameMap | None:
    """The frames of encapsulated pixel data starting at `offset` (its Basic Offset Table
    item), by the rules of PS3.5 A.4: one fragment per frame when there are as many
    fragments as frames, every fragment for a single frame, else grouped by the Basic
    Offset Table. None when the fragments cannot be told apart that way (several
    fragments per frame and no offset table), when the data is malformed or too large to
    walk here: the general path then reads it with pydicom."""
    stream.seek(0, os.SEEK_END)
    end = stream.tell()
    if end - offset > MAX_WALKED_BYTES:
        return None
    stream.seek(offset)
    data = stream.read(end - offset)
    view = memoryview(data)

    def item_at(position: int) -> tuple[tuple[int, int], int] | None:
        if position + 8 > len(data):
            return None
        group, element, item_length = struct.unpack_from("<HHI", view, position)
        return (group, element), item_length

    first = item_at(0)
    if first is None or first[0] != ITEM or 8 + first[1] > len(data):
        return None
    table_length = first[1]
    basic = list(struct.unpack_from(f"<{table_length // 4}I", view, 8)) if table_length >= 4 else []
    fragments: list[tuple[int, int]] = []  # (position of the item tag relative to the first fragment, length)
    start = position = 8 + table_length
    while True:
        item = item_at(position)
        if item is None:
            return None  # truncated: no sequence delimiter
        tag, item_length = item
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM or item_length == UNDEFINED_LENGTH or position + 8 + item_length > len(data):
            return None
        fragments.append((position - start, item_length))
        position += 8 + item_length
    if not fragments:
        return None

    def piece(fragment: tuple[int, int]) -> tuple[int, int]:
        return (offset + start + fragment[0] + 8, fragment[1])

    end = offset + position
    if len(fragments) == count:
        return FrameMap(tuple((piece(fragment),) for fragment in fragments), end)
    if count == 1:
        return FrameMap((tuple(piece(fragment) for fragment in fragments),), end)
    if len(basic) != count:
        return None
    starts = {fragment[0]: index for index, fragment in enumerate(fragments)}
    if any(value not in starts for value in basic):
        return None
    bounds = [starts[value] for value in basic]
    if bounds[0] != 0 or bounds != sorted(set(bounds)):
        return None
    ends = [*bounds[1:], len(fragments)]
    grouped = (fragments[low:high] for low, high in zip(bounds, ends, strict=True))
    return FrameMap(tuple(tuple(piece(fragment) for fragment in group) for group in grouped), end)


class _FrameMapCache:
    """The last few thousand frame maps, by storage key (a key names the file's content,
    so a map never goes stale), shared by the threads of a process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._maps: OrderedDict[str, FrameMap | _NotMappable] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> FrameMap | _NotMappable | None:
        with self._lock:
            found = self._maps.get(key)
            if found is not None:
                self._maps.move_to_end(key)
            return found

    def put(self, key: str, value: FrameMap | _NotMappable) -> None:
        with self._lock:
            self._maps[key] = value
            self._maps.move_to_end(key)
            while len(self._maps) > self.size:
                self._maps.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()


_FRAME_MAPS = _FrameMapCache(4096)


def _frame_bits(ds: object) -> int:
    """The bits one native frame occupies."""
    rows = int(ds.Rows)  # type: ignore[attr-defined]
    columns = int(ds.Columns)  # type: ignore[attr-defined]
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if str(getattr(ds, "PhotometricInterpretation", "") or "").strip() == "YBR_FULL_422":
        # Native YBR_FULL_422 holds two values a pixel: each pair of pixels shares its Cb
        # and Cr (PS3.3 C.7.6.3.1.2), as the ingest's pixel data check counts them.
        samples = 2
    bits = int(getattr(ds, "BitsAllocated", 16) or 16)
    return rows * columns * samples * bits


def _native_frame_length(ds: object) -> int:
    return (_frame_bits(ds) + 7) // 8


def bulk_value(source: Source, tag: str) -> tuple[list[bytes], str, str]:
    """A bulk data element's value: (parts, media type, transfer syntax). Pixel data that
    is encapsulated comes as one part per frame, in its compressed media type."""
    with _opened(source) as opened:
        ds = dcmread(opened)
    number = int(tag, 16)
    if number == 0x7FE00010:
        stored = str(ds.file_meta.TransferSyntaxUID)
        count = int(ds.get("NumberOfFrames", 1) or 1)
        if is_video(stored):
            stream = b"".join(generate_fragments(ds.PixelData))
            return [stream], VIDEO_MEDIA_TYPES[stored], stored
        if UID(stored).is_encapsulated:
            parts = [get_frame(ds.PixelData, index, number_of_frames=count) for index in range(count)]
            return parts, frame_media_type(stored), stored
        return [bytes(ds.PixelData)], OCTET_STREAM, EXPLICIT_LE
    if number not in ds:
        raise LookupError(f"no element {tag}")
    value = ds[number].value
    if not isinstance(value, bytes | bytearray):
        raise LookupError(f"element {tag} is not bulk data")
    return [bytes(value)], OCTET_STREAM, EXPLICIT_LE


def octet_stream_values(source: Source, tags: list[str]) -> dict[str, bytes]:
    """The values of the top-level bulk data elements `tags` (hex, as the metadata names
    them) as application/octet-stream with Explicit VR Little Endian: binary values as
    stored (byte-swapped from big endian), pixel data uncompressed, its frames one after
    another. Raises CannotDecode when compressed pixel data cannot be decoded here."""
    with _opened(source) as opened:
        ds = dcmread(opened)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if stored == BIG_ENDIAN:
        as_little_endian(ds)
    values: dict[str, bytes] = {}
    for tag in tags:
        number = int(tag, 16)
        if number not in ds:
            continue
        if number == PIXEL_DATA_TAG and stored.is_encapsulated:
            count = int(ds.get("NumberOfFrames", 1) or 1)
            decoded = []
            for index in range(count):
                try:
                    arr = rendering.decoded_frame(ds, index)
                except rendering.CannotDecode as exc:
                    raise CannotDecode(str(exc)) from exc
                decoded.append(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
            values[tag] = b"".join(decoded)
            continue
        value = ds[number].value
        if isinstance(value, bytes | bytearray):
            values[tag] = bytes(value)
    return values
