"""WADO-RS (PS3.18 10.4): instances as stored, frames, bulk data and the media type
negotiation that decides between sending what is stored and decoding it.

The archive keeps each file exactly as received. A retrieve sends those bytes unless the
client asks for a transfer syntax they are not in; the only conversion offered is to
Explicit VR Little Endian (decompression), which every client can read."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from pydicom import dcmread
from pydicom.encaps import generate_fragments, get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import UID, AllTransferSyntaxes, ExplicitVRLittleEndian, MPEGTransferSyntaxes

from cloudpacs.dicomweb.http import MediaRange, not_acceptable

logger = logging.getLogger("cloudpacs.dicomweb")

EXPLICIT_LE = str(ExplicitVRLittleEndian)
OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"
PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}

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
    """How to send instances: as stored (transfer_syntax None) or converted to it."""

    transfer_syntax: str | None


def choose_instance_syntax(ranges: list[MediaRange], stored: set[str]) -> InstanceChoice:
    """For Accept: multipart/related; type="application/dicom"[; transfer-syntax=...].

    No transfer-syntax, or '*', sends the files as stored: PS3.18 names Explicit VR Little
    Endian as the default, but decompressing a whole study to send it is what a client
    that wants that should ask for, and the stored bytes are what every client reads."""
    for item in ranges:
        if not item.matches(DICOM):
            continue
        wanted = item.transfer_syntax
        if wanted in (None, "*") or stored <= {wanted}:
            return InstanceChoice(None)
        if wanted == EXPLICIT_LE:
            return InstanceChoice(EXPLICIT_LE)
    raise not_acceptable('instances are sent as multipart/related; type="application/dicom"')


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
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
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
    stored_type = frame_media_type(stored)
    as_stored = FrameChoice(stored_type, EXPLICIT_LE if native else stored, decode=False)
    decoded = FrameChoice(OCTET_STREAM, EXPLICIT_LE, decode=not native)
    for item in ranges:
        wanted = item.transfer_syntax
        if item.part_type in {"*/*", "*"}:
            if wanted in (None, "*"):
                return as_stored
            if wanted == EXPLICIT_LE:
                return decoded
            continue
        if item.matches(stored_type) and (wanted in (None, "*") or wanted == as_stored.transfer_syntax):
            return as_stored
        if item.matches(OCTET_STREAM):
            if wanted == "*":
                return as_stored
            if wanted in (None, EXPLICIT_LE):
                return decoded
    raise not_acceptable(f"frames are stored as {stored_type} (transfer syntax {stored})")


def frames(source: Source, numbers: list[int], decode: bool) -> list[bytes]:
    """The bytes of the frames `numbers` (1-based): as stored, or decoded to native
    little endian pixel data. As stored, only the frames' own bytes are read (native
    pixel data at their offsets, encapsulated frames through the offset table), which on
    an object store are ranged GETs; decoding reads the instance."""
    with _opened(source) as stream:
        if not decode:
            found = _stored_frames(stream, numbers)
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
            arr = pixel_array(ds, index=number - 1 if count > 1 else None)
            out.append(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return out
    data = ds.PixelData
    if transfer_syntax.is_encapsulated:
        return [get_frame(data, number - 1, number_of_frames=count) for number in numbers]
    length = _native_frame_length(ds)
    return [bytes(data[(number - 1) * length : number * length]) for number in numbers]


def _stored_frames(stream: BinaryIO, numbers: list[int]) -> list[bytes] | None:
    """Frames as stored, read straight from the file at their offsets, the dataset
    parsed only up to the pixel data: native (uncompressed, not deflated) frames by
    their length, encapsulated ones through the Basic or Extended Offset Table. None
    for any other encoding, which frames() then reads the general way."""
    ds = dcmread(stream, defer_size=1024)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    raw: Any = ds.get_item(PIXEL_DATA_TAG, keep_deferred=True)
    if raw is None:
        raise LookupError("the instance has no pixel data")
    offset, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if offset is None or "Rows" not in ds:
        return None
    count = int(ds.get("NumberOfFrames", 1) or 1)
    for number in numbers:
        if not 1 <= number <= count:
            raise LookupError(f"frame {number} is outside 1..{count}")
    if syntax in ENCAPSULATED_SEEKABLE and length == UNDEFINED_LENGTH:
        extended = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        out = []
        for number in numbers:
            stream.seek(offset)
            out.append(get_frame(stream, number - 1, number_of_frames=count, extended_offsets=extended))
        return out
    if syntax not in {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"} or length in (None, UNDEFINED_LENGTH):
        return None
    size = _native_frame_length(ds)
    out = []
    for number in numbers:
        stream.seek(offset + (number - 1) * size)
        data = stream.read(size)
        if len(data) != size or (number * size > length):
            raise LookupError(f"frame {number} is not all in the file")
        out.append(data)
    return out


def _native_frame_length(ds: object) -> int:
    rows = int(ds.Rows)  # type: ignore[attr-defined]
    columns = int(ds.Columns)  # type: ignore[attr-defined]
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    bits = int(getattr(ds, "BitsAllocated", 16) or 16)
    return (rows * columns * samples * bits + 7) // 8


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
