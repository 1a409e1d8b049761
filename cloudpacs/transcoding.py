"""A stored instance made sendable to a peer that does not take its transfer syntax.

The archive keeps each instance's bytes as received; a C-MOVE or C-GET sends them as they
are wherever the peer accepted the stored syntax. Consoles and older workstations accept
only Implicit and Explicit VR Little Endian: an instance stored compressed (JPEG, JPEG-LS,
JPEG 2000, RLE) is then decompressed here, as dcm4chee and Orthanc do, to Explicit VR
Little Endian (pynetdicom encodes it in Implicit VR where that is the peer's only choice).
Deflated and big endian instances need nothing here: pynetdicom inflates, and
`cloudpacs.queryretrieve.as_little_endian` turns big endian around when it reads.

What PS3.5 8.2 and PS3.3 C.7.6.1.1.5 ask of the decompressed object is set: the Transfer
Syntax UID, the Photometric Interpretation the pixels now have (YBR_FULL_422, YBR_FULL,
YBR_ICT and YBR_RCT become RGB), Planar Configuration 0, no Extended Offset Table, and an
object that was lossy compressed says so (Lossy Image Compression "01", with the method
and the ratio of this compression when the stored object did not say it). The SOP Instance
UID stays: the pixels are those the stored object decodes to.

Memory: frames are decoded one at a time into an unnamed temporary file that becomes the
Pixel Data's value (pydicom writes such a value in chunks), so the process holds the
compressed object and one frame while decoding, and then pynetdicom's one encoded copy of
the message; never the decoded pixels twice. An instance whose decoded pixels would pass
`settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES` is not decompressed (the sub-operation fails and is counted)."""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from typing import Any

import numpy as np
from django.conf import settings
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)
from pydicom.valuerep import VR

UNCOMPRESSED = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})

# The compression method of each syntax that is (or may be) lossy, as Lossy Image
# Compression Method names it (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHODS = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    JPEG2000MC: "ISO_15444_2",
    HTJ2K: "ISO_15444_15",
}
# These may also hold a reversible (lossless) code stream: taken as lossy unless the
# object says "00".
MAYBE_LOSSLESS = frozenset({JPEG2000, JPEG2000MC, HTJ2K})

CHUNK = 1024 * 1024


class TranscodeError(Exception):
    """An instance that cannot be made sendable here: why, in a sentence for the log."""


def for_peer(ds: Dataset, accepted: Collection[str], *, limit: int | None = None) -> Dataset:
    """`ds` as it can be sent to a peer that accepted the transfer syntaxes `accepted` for
    its SOP class: itself (its stored bytes) when the peer takes its syntax, or when it is
    uncompressed and pynetdicom converts it; decompressed (in place) when it is
    encapsulated and the peer takes a little endian uncompressed syntax. Raises
    TranscodeError when that cannot be done here (no decoder for the syntax, pixels past
    `limit`, by default settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES; a code stream that does not decode);
    `ds` is then unchanged."""
    stored = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if stored in accepted or not stored.is_encapsulated or not UNCOMPRESSED & set(map(str, accepted)):
        return ds
    return decompress(ds, limit=limit)


def decompressed_size(ds: Dataset) -> int:
    frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 8)
    return frames * int(ds.Rows) * int(ds.Columns) * samples * ((bits + 7) // 8)


def decompress(ds: Dataset, *, limit: int | None = None) -> Dataset:
    """`ds`, encapsulated, made Explicit VR Little Endian in place (see the module)."""
    # Pynetdicom encodes the whole C-STORE message in memory before it is sent: one copy of
    # the decoded pixels, besides the ~110 MB the receiver's process holds once loaded
    # (bench/qr/transcode_memory.py: 90 MB decoded peaked at 198 MB). The default, 96 MiB
    # (a 190-frame 512 x 512 16-bit object), keeps a process under 300 MB.
    limit = settings.DICOM_RETRIEVE_MAX_DECOMPRESSED_BYTES if limit is None else limit
    stored = UID(str(ds.file_meta.TransferSyntaxUID))
    if "PixelData" not in ds:
        raise TranscodeError(f"{stored.name} without Pixel Data")
    try:
        decoder = get_decoder(stored)
    except NotImplementedError:
        raise TranscodeError(f"no decoder for {stored.name} ({stored})") from None
    if not decoder.is_available:
        raise TranscodeError(f"the decoder for {stored.name} is not installed")
    try:
        size = decompressed_size(ds)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise TranscodeError(f"the image pixel module cannot be read: {exc}") from None
    if bits % 8:
        # Native 1-bit pixels are packed across frames; the decoders give a byte a pixel.
        raise TranscodeError(f"Bits Allocated {bits} is not decompressed here")
    if size > limit:
        raise TranscodeError(f"{size:,} bytes decompressed, more than the {limit:,} allowed")
    compressed_size = len(ds.PixelData)
    # Not closed here: it becomes the Pixel Data's value, and goes (unnamed, so with its
    # disk space) when the dataset does.
    pixels = tempfile.TemporaryFile(buffering=CHUNK)  # noqa: SIM115
    written = frames = 0
    image_pixel: dict[str, Any] = {}
    try:
        for frame, module in decoder.iter_array(ds, as_rgb=True):
            written += pixels.write(_little_endian(frame, bits).tobytes())
            frames += 1
            image_pixel = module
    except Exception as exc:
        pixels.close()
        raise TranscodeError(f"{stored.name} did not decode: {exc}") from None
    if written != size:
        pixels.close()
        raise TranscodeError(f"{stored.name} decoded to {written:,} bytes, {size:,} expected")
    if written % 2:
        pixels.write(b"\x00")
    pixels.flush()
    pixels.seek(0)

    element = ds["PixelData"]
    element.value = pixels
    element.VR = VR.OB if bits <= 8 else VR.OW
    element.is_undefined_length = False
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    ds.PhotometricInterpretation = image_pixel["photometric_interpretation"]
    if int(image_pixel.get("samples_per_pixel", 1)) > 1:
        ds.PlanarConfiguration = int(image_pixel.get("planar_configuration", 0))
    if "NumberOfFrames" in ds or frames > 1:
        ds.NumberOfFrames = frames
    _mark_lossy(ds, stored, ratio=size / max(compressed_size, 1))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True, ds.original_character_set)
    return ds


def _little_endian(frame: np.ndarray, bits: int) -> np.ndarray:
    """The frame's samples in Bits Allocated's width, little endian (a decoder may give a
    wider or narrower type than the object allocates)."""
    width = (bits + 7) // 8
    kind = "i" if frame.dtype.kind == "i" else "u"
    wanted = np.dtype(f"<{kind}{width}")
    return frame if frame.dtype == wanted else frame.astype(wanted)


def _mark_lossy(ds: Dataset, stored: UID, *, ratio: float) -> None:
    """PS3.3 C.7.6.1.1.5: an image that was once lossy compressed says so ever after.
    What the stored object says is kept; where it did not say this compression (no
    Lossy Image Compression, or "00" from a syntax that can only be lossy), "01" with
    this compression's method and ratio added to those of earlier ones."""
    method = LOSSY_METHODS.get(stored)
    said = str(ds.get("LossyImageCompression", "")).strip()
    if method is None or said == "01" or (said == "00" and stored in MAYBE_LOSSLESS):
        return
    ds.LossyImageCompression = "01"
    ratios = [str(value) for value in _values(ds.get("LossyImageCompressionRatio"))]
    methods = [str(value) for value in _values(ds.get("LossyImageCompressionMethod"))]
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"[:16]]
    ds.LossyImageCompressionMethod = [*methods, method]


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]
