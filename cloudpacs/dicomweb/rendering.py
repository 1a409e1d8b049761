"""Server-side rendering of a frame to JPEG or PNG, for /rendered, thumbnails, the
township's pages and the key image of a report.

Colour images are shown as they are, with no window: RGB; YBR_FULL, YBR_FULL_422 and the
other YBR forms, which pydicom converts to RGB as it decodes; PALETTE COLOR through the
image's lookup tables. Grayscale follows the grayscale standard display pipeline of PS3.3
C.11 and PS3.4 N.2: stored values -> Modality LUT (rescale or Modality LUT Sequence) ->
VOI (an explicit window, else the VOI LUT Sequence, else the dataset's window, else the
image's range) -> MONOCHROME1 inversion -> 8 bits. A large image asked for at a small
viewport is reduced by whole-block averaging before the LUTs run, so a 3000x3000 DX
costs a 512x512 pipeline. Video (MPEG-2, H.264, HEVC) is not decoded here."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit, MPEGTransferSyntaxes

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
# MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265: nothing here decodes them.
VIDEO_TRANSFER_SYNTAXES = {str(syntax) for syntax in MPEGTransferSyntaxes}
VOI_FUNCTIONS = {"LINEAR", "LINEAR_EXACT", "SIGMOID"}


class RenderingError(ValueError):
    """The frame cannot be rendered (no pixel data, or an encoding nothing decodes)."""


class CannotDecode(RenderingError):
    """The pixel data is there, and no installed decoder decodes it (a damaged codestream)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    # (sx, sy, sw, sh) of the source image to show, from a six-value viewport.
    region: tuple[int, int, int, int] | None = None
    quality: int = 90
    # Thumbnails fit the viewport but are never enlarged.
    enlarge: bool = True


def render(path: Path | str | BinaryIO, frame_index: int, options: RenderOptions) -> bytes:
    """One frame as JPEG or PNG. `path` is a stored file's path or a seekable stream of
    it (`cloudpacs.storage.open_key`): only the header and that frame are read."""
    ds = dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds:
        raise RenderingError("the instance has no image")
    if str(ds.file_meta.get("TransferSyntaxUID", "")) in VIDEO_TRANSFER_SYNTAXES:
        raise RenderingError("a video is not rendered here: retrieve its pixel data as bulk data and play it")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame_index < frames:
        raise RenderingError(f"frame {frame_index + 1} is outside 1..{frames}")
    if not isinstance(path, str | Path):
        path.seek(0)
    source: Any = path
    if str(ds.file_meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        # pixel_array reads a file without inflating it, and finds no pixel data there.
        source = dcmread(path)
    try:
        arr = pixel_array(source, index=frame_index if frames > 1 else None)
    except Exception as exc:  # a codec that is missing or fails says why
        if not isinstance(path, str | Path):
            path.seek(0)
        arr = decoded_frame(dcmread(path), frame_index, exc)
    image = render_array(arr, ds, options)
    return encode(image, options)


SEQUENTIAL_JPEG = {str(JPEGBaseline8Bit), str(JPEGExtended12Bit)}


def decoded_frame(ds: Dataset, index: int, failure: Exception | None = None) -> np.ndarray:
    """Frame `index` (0-based) of a whole dataset, decoded. A sequential JPEG frame whose
    scan header gives the parameters of another process (Ss, Se, Ah, Al: ITU-T T.81 B.2.3
    fixes them at 0, 63, 0, 0 for sequential DCT) is decoded with those put right, as
    dcmtk (libijg) decodes it with a warning and libjpeg refuses it: pydicom's JPEG-lossy,
    12-bit JPEG Extended. `failure`, when given, is what decoding it as it is raised."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise RenderingError("the instance has no pixel data")
    if failure is None:
        try:
            return pixel_array(ds, index=index if frames > 1 else None)
        except Exception as exc:  # a codec that is missing or fails says why
            failure = exc
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if syntax in SEQUENTIAL_JPEG and "PixelData" in ds:
        try:
            repaired = _sequential_scan_header(get_frame(ds.PixelData, index, number_of_frames=frames))
        except Exception:
            repaired = None
        if repaired is not None:
            single = ds.copy()
            single.PixelData = encapsulate([repaired])
            single.NumberOfFrames = 1
            with contextlib.suppress(Exception):
                return pixel_array(single)
    raise CannotDecode(f"cannot decode the pixel data: {type(failure).__name__}: {failure}") from failure


def _sequential_scan_header(frame: bytes) -> bytes | None:
    """`frame` with each scan header's spectral selection and approximation set to what a
    sequential DCT process (SOF0, SOF1) requires, or None when it is not such a stream or
    needed no change."""
    data = bytearray(frame)
    position, sequential, changed = 2, False, False
    if data[:2] != b"\xff\xd8":
        return None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in (0xC0, 0xC1):
            sequential = True
        elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # progressive, lossless or arithmetic: nothing to put right
        if marker == 0xDA:
            if not sequential:
                return None
            components = data[position + 4]
            at = position + 5 + 2 * components
            if bytes(data[at : at + 3]) != b"\x00\x3f\x00":
                data[at : at + 3] = b"\x00\x3f\x00"
                changed = True
            # The entropy-coded data follows; a later scan (non-interleaved components)
            # starts at the next SOS marker, which stuffed data cannot imitate.
            following = data.find(b"\xff\xda", position + 2 + length)
            if following < 0:
                break
            position = following
            continue
        position += 2 + length
    return bytes(data) if changed else None


def render_array(arr: np.ndarray, ds: Dataset, options: RenderOptions) -> Image.Image:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        return _color(_palette(arr, ds), options)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        # RGB, and YBR_* which pydicom has converted to RGB while decoding.
        return _color(arr, options)
    if options.region is not None:
        sx, sy, sw, sh = options.region
        arr = arr[max(sy, 0) : max(sy, 0) + sh, max(sx, 0) : max(sx, 0) + sw]
        if arr.size == 0:
            raise RenderingError("the viewport's source region is outside the image")
    target = target_size(arr.shape[1], arr.shape[0], options)
    arr = reduce(arr, target)
    pixels = eight_bits(arr, ds, options.window)
    image = Image.fromarray(pixels)
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    return image


def target_size(width: int, height: int, options: RenderOptions) -> tuple[int, int]:
    """The output size: the viewport, keeping the aspect ratio (PS3.18 8.3.5.1.3)."""
    if options.viewport is None:
        return width, height
    vw, vh = options.viewport
    scale = min(vw / width, vh / height)
    if not options.enlarge:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def reduce(arr: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Average whole k x k blocks while the image stays at least twice the target, so
    the LUTs run on few pixels and the final resize only has a small step left."""
    factor = min(arr.shape[1] // target[0], arr.shape[0] // target[1])
    if factor < 2:
        return arr
    height = arr.shape[0] // factor * factor
    width = arr.shape[1] // factor * factor
    blocks = arr[:height, :width].reshape(height // factor, factor, width // factor, factor)
    reduced = blocks.mean(axis=(1, 3), dtype=np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        # LUTs are indexed by stored values: keep them integers.
        return np.rint(reduced).astype(arr.dtype)
    return reduced.astype(np.float32)


def eight_bits(arr: np.ndarray, ds: Dataset, window: Window | None = None) -> np.ndarray:
    """Stored grayscale values to display values 0..255.

    Every step after the image's range is known works value by value, so an image of
    integers (every CT, MR, CR and DX) is mapped through a table of its stored values,
    low to high, computed once: 4,096 values instead of 262,144 pixels for a 512 x 512 CT
    (the whole pipeline per pixel was most of the CPU of a /rendered image)."""
    if np.issubdtype(arr.dtype, np.integer) and arr.size:
        low, high = int(arr.min()), int(arr.max())
        if high - low < min(arr.size, 1 << 16):
            index = np.subtract(arr, low, dtype=np.intp)
            stored = np.arange(low, high + 1, dtype=np.int64).astype(arr.dtype)
            values = apply_modality_lut(stored, ds)
            if window is None and not ds.get("VOILUTSequence") and window_from(ds) is None:
                # The image's own range: of the values it holds, not of the whole table.
                window = _range_window(np.take(values, index))
            return np.take(_display(values, ds, window), index)
    return _display(apply_modality_lut(arr, ds), ds, window)


def _range_window(values: np.ndarray) -> Window:
    low, high = float(np.min(values)), float(np.max(values))
    return Window((low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT")


def _display(values: np.ndarray, ds: Dataset, window: Window | None) -> np.ndarray:
    """Modality values to display values 0..255: the VOI, then MONOCHROME1's inversion."""
    if window is not None:
        out = windowed(values, window)
    elif ds.get("VOILUTSequence"):
        out = _voi_lut(values, ds)
    elif (dataset_window := window_from(ds)) is not None:
        out = windowed(values, dataset_window)
    else:
        out = windowed(values, _range_window(values))
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255.0 - out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def window_from(ds: Dataset) -> Window | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    center = _first(center)
    width = _first(width)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if width <= 0:
        return None
    return Window(center, width, function if function in VOI_FUNCTIONS else "LINEAR")


def _first(value: Any) -> float:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 and C.11.2.1.3, to an output range of 0..255."""
    x = values.astype(np.float32, copy=False)
    c, w = float(window.center), float(window.width)
    if window.function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if window.function == "LINEAR_EXACT":
        return np.clip(((x - c) / w + 0.5) * 255.0, 0.0, 255.0)
    if w < 1:
        w = 1.0
    if w == 1:
        return np.where(x <= c - 0.5, 0.0, 255.0).astype(np.float32)
    return np.clip(((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0.0, 255.0)


def _voi_lut(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """The first VOI LUT of the VOI LUT Sequence, its output range scaled to 0..255.

    The range is the LUT's own (its smallest and largest entries): LUT Descriptor bit
    depths are often nominal (16 for data that never exceeds 4095)."""
    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values).astype(np.int64)
    mapped = apply_voi(values, ds, index=0)
    lut = apply_voi(np.arange(_lut_first(ds), _lut_first(ds) + _lut_entries(ds)), ds, index=0)
    low, high = float(lut.min()), float(lut.max())
    return (mapped.astype(np.float32) - low) * (255.0 / max(high - low, 1.0))


def _lut_first(ds: Dataset) -> int:
    return int(ds.VOILUTSequence[0].LUTDescriptor[1])


def _lut_entries(ds: Dataset) -> int:
    return int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 65536


def _palette(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Palette colour indices through the image's Red, Green and Blue lookup tables
    (PS3.3 C.7.6.3.1.5), to 8 bits per channel from the tables' own bit depth."""
    try:
        rgb = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception as exc:
        raise RenderingError(f"cannot apply the palette colour lookup tables: {type(exc).__name__}: {exc}") from exc
    if bits > 8:
        return (rgb.astype(np.uint32) >> (bits - 8)).astype(np.uint8)
    return rgb.astype(np.uint8)


def _color(arr: np.ndarray, options: RenderOptions) -> Image.Image:
    if arr.dtype != np.uint8:
        top = float(arr.max()) or 1.0
        arr = np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    if options.region is not None:
        sx, sy, sw, sh = options.region
        image = image.crop((sx, sy, sx + sw, sy + sh))
    target = target_size(image.width, image.height, options)
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS)
    return image


def encode(image: Image.Image, options: RenderOptions) -> bytes:
    buffer = BytesIO()
    if FORMATS[options.media_type] == "JPEG":
        image.save(buffer, format="JPEG", quality=options.quality, optimize=False)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_instance(
    instance: Any,
    *,
    viewport: tuple[int, int] | None = None,
    media_type: str = "image/jpeg",
    frame: int = 1,
    window: Window | None = None,
    quality: int = 90,
) -> bytes:
    """One frame of an archived `cloudpacs.models.Instance` as JPEG or PNG, for pages
    and documents (a township's study page, the key image of a report). Thumbnails pass
    a small viewport; the image is never enlarged beyond its own size here."""
    from cloudpacs import storage

    options = RenderOptions(media_type=media_type, window=window, viewport=viewport, quality=quality, enlarge=False)
    with storage.open_key(instance.storage_key) as stream:
        return render(stream, frame - 1, options)
