"""Vendor-like datasets of the classes township and county equipment sends besides CT and
DR: ultrasound (single frame, cine, colour, YBR_FULL_422 JPEG), XA, MG, NM, PT, a 12-lead
ECG, an encapsulated PDF report and an endoscopy video. Each is small, but carries the
attributes its IOD requires for display (photometric interpretation, planar configuration,
frame timing), encoded the way such machines encode them."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG4HP41,
    DigitalMammographyXRayImageStorageForPresentation,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    TwelveLeadECGWaveformStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    VideoEndoscopicImageStorage,
    XRayAngiographicImageStorage,
)

from tests.factories import make_dataset

# Colours of the two halves of the colour test images, and of the bar that moves in cine.
LEFT_RGB = (200, 40, 40)
RIGHT_RGB = (40, 60, 200)
FRAME_TIME_MS = 40.0  # 25 frames a second


def _base(sop_class_uid: str, modality: str, rows: int, columns: int, **fields: Any) -> Dataset:
    """make_dataset without the CT's rescale and window, which these classes do not have."""
    ds = make_dataset(sop_class_uid=sop_class_uid, modality=modality, rows=rows, columns=columns, **fields)
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Manufacturer = "Vendor"
    return ds


def _no_image(ds: Dataset) -> Dataset:
    for keyword in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelData",
    ):
        delattr(ds, keyword)
    return ds


def _eight_bit(ds: Dataset, samples: int, photometric: str) -> None:
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if samples > 1:
        ds.PlanarConfiguration = 0


def encapsulated(ds: Dataset) -> Dataset:
    """Mark Pixel Data as encapsulated: OB of undefined length (PS3.5 A.4), which is how
    pynetdicom then encodes it on the wire."""
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def halves(rows: int, columns: int) -> np.ndarray:
    """An RGB image: LEFT_RGB on the left half, RIGHT_RGB on the right."""
    rgb = np.zeros((rows, columns, 3), np.uint8)
    rgb[:, : columns // 2] = LEFT_RGB
    rgb[:, columns // 2 :] = RIGHT_RGB
    return rgb


def cine_frame(rows: int, columns: int, frame: int, frames: int) -> np.ndarray:
    """Gray 40 with a white bar whose column moves with the frame number, so that each frame
    of a cine can be told from the others by where the bar is."""
    image = np.full((rows, columns), 40, np.uint8)
    width = columns // frames
    image[:, frame * width : (frame + 1) * width] = 250
    return image


def us_single_rgb(rows: int = 48, columns: int = 64, *, planar: int = 0, **fields: Any) -> Dataset:
    """A B-mode still with colour annotations: Ultrasound Image Storage, RGB."""
    ds = _base(UltrasoundImageStorage, "US", rows, columns, **fields)
    _eight_bit(ds, 3, "RGB")
    rgb = halves(rows, columns)
    ds.PlanarConfiguration = planar
    ds.PixelData = (rgb.transpose(2, 0, 1) if planar else rgb).tobytes()
    return ds


def us_cine(frames: int = 8, rows: int = 48, columns: int = 64, **fields: Any) -> Dataset:
    """A B-mode clip: Ultrasound Multi-frame Image Storage, MONOCHROME2, with the frame
    timing of the US Region and Cine modules."""
    ds = _base(UltrasoundMultiFrameImageStorage, "US", rows, columns, **fields)
    _eight_bit(ds, 1, "MONOCHROME2")
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = FRAME_TIME_MS
    ds.CineRate = round(1000 / FRAME_TIME_MS)
    ds.RecommendedDisplayFrameRate = round(1000 / FRAME_TIME_MS)
    ds.PixelData = b"".join(cine_frame(rows, columns, n, frames).tobytes() for n in range(frames))
    return ds


def jpeg(rgb: np.ndarray, subsampling: int = 1) -> bytes:
    """One JPEG baseline frame, in YCbCr; subsampling 1 is 4:2:2, as ultrasound machines send."""
    buffer = BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, subsampling=subsampling)
    return buffer.getvalue()


def us_ybr_full_422_jpeg(frames: int = 4, rows: int = 48, columns: int = 64, **fields: Any) -> Dataset:
    """A colour Doppler clip as most consoles send it: JPEG baseline, YBR_FULL_422, one
    fragment per frame."""
    ds = _base(UltrasoundMultiFrameImageStorage, "US", rows, columns, transfer_syntax_uid=JPEGBaseline8Bit, **fields)
    _eight_bit(ds, 3, "YBR_FULL_422")
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = FRAME_TIME_MS
    ds.PixelData = encapsulate([jpeg(halves(rows, columns)) for _ in range(frames)])
    encapsulated(ds)
    ds.LossyImageCompression = "01"
    return ds


def us_ybr_full(rows: int = 48, columns: int = 64, **fields: Any) -> Dataset:
    """An uncompressed YBR_FULL still (some consoles' native colour)."""
    ds = _base(UltrasoundImageStorage, "US", rows, columns, **fields)
    _eight_bit(ds, 3, "YBR_FULL")
    rgb = halves(rows, columns).astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    ybr = np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)
    ds.PixelData = ybr.tobytes()
    return ds


def us_palette(rows: int = 48, columns: int = 64, *, entry_bits: int = 16, **fields: Any) -> Dataset:
    """A PALETTE COLOR still: index 0 on the left half, 1 on the right, through LUTs of 16-bit
    entries, or of 8-bit ones (PS3.3 C.7.6.3.1.5: stored as with 8 bits allocated, two
    entries to each word of the OW LUT Data)."""
    ds = _base(UltrasoundImageStorage, "US", rows, columns, **fields)
    _eight_bit(ds, 1, "PALETTE COLOR")
    index = np.zeros((rows, columns), np.uint8)
    index[:, columns // 2 :] = 1
    ds.PixelData = index.tobytes()
    for channel, (left, right) in zip(("Red", "Green", "Blue"), zip(LEFT_RGB, RIGHT_RGB, strict=True), strict=True):
        setattr(ds, f"{channel}PaletteColorLookupTableDescriptor", [256, 0, entry_bits])
        lut = np.zeros(256, np.uint16 if entry_bits == 16 else np.uint8)
        lut[0], lut[1] = (left * 257, right * 257) if entry_bits == 16 else (left, right)
        setattr(ds, f"{channel}PaletteColorLookupTableData", lut.tobytes())
    return ds


def xa_run(frames: int = 6, rows: int = 64, columns: int = 64, **fields: Any) -> Dataset:
    """An angiography run: X-Ray Angiographic Image Storage, 8-bit, multi-frame."""
    ds = _base(XRayAngiographicImageStorage, "XA", rows, columns, **fields)
    _eight_bit(ds, 1, "MONOCHROME2")
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 66.7
    ds.PositionerMotion = "STATIC"
    ds.PixelData = b"".join(cine_frame(rows, columns, n, frames).tobytes() for n in range(frames))
    return ds


def mg(rows: int = 64, columns: int = 48, **fields: Any) -> Dataset:
    """A mammogram for presentation: MONOCHROME1, 16 bits allocated, 12 stored."""
    ds = _base(DigitalMammographyXRayImageStorageForPresentation, "MG", rows, columns, **fields)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = "L"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    return ds


def nm(frames: int = 4, rows: int = 32, columns: int = 32, **fields: Any) -> Dataset:
    """A nuclear medicine dynamic: 16-bit counts, multi-frame."""
    ds = _base(NuclearMedicineImageStorage, "NM", rows, columns, **fields)
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = [0x00540010, 0x00540020]
    ds.EnergyWindowVector = [1] * frames
    ds.DetectorVector = [1] * frames
    counts = np.arange(rows * columns * frames, dtype=np.uint16) % 1000
    ds.PixelData = counts.tobytes()
    return ds


def pt(rows: int = 32, columns: int = 32, **fields: Any) -> Dataset:
    """A PET slice: signed 16-bit with a fractional rescale slope."""
    ds = _base(PositronEmissionTomographyImageStorage, "PT", rows, columns, **fields)
    ds.PixelRepresentation = 1
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.RescaleSlope = "0.25"
    ds.RescaleIntercept = 0
    ds.Units = "BQML"
    ds.PixelData = (np.arange(rows * columns, dtype=np.int16) * 3).tobytes()
    return ds


def ecg(**fields: Any) -> Dataset:
    """A 12-lead resting ECG: 10 s at 500 Hz, int16, no pixel data."""
    ds = _no_image(_base(TwelveLeadECGWaveformStorage, "ECG", 1, 1, **fields))
    samples = 5000
    waveform = Dataset()
    waveform.MultiplexGroupTimeOffset = 0
    waveform.WaveformOriginality = "ORIGINAL"
    waveform.NumberOfWaveformChannels = 12
    waveform.NumberOfWaveformSamples = samples
    waveform.SamplingFrequency = 500
    waveform.WaveformBitsAllocated = 16
    waveform.WaveformSampleInterpretation = "SS"
    channels = []
    for lead in range(12):
        channel = Dataset()
        source = Dataset()
        source.CodeValue = f"5.6.3-9-{lead + 1}"
        source.CodingSchemeDesignator = "SCPECG"
        source.CodeMeaning = f"Lead {lead + 1}"
        channel.ChannelSourceSequence = Sequence([source])
        channel.ChannelSensitivity = 2.5
        channel.ChannelBaseline = 0
        channel.WaveformBitsStored = 16
        channels.append(channel)
    waveform.ChannelDefinitionSequence = Sequence(channels)
    t = np.arange(samples) / 500
    data = np.stack([np.rint(400 * np.sin(2 * np.pi * 1.2 * t + lead)) for lead in range(12)], axis=1)
    waveform.WaveformData = data.astype("<i2").tobytes()
    ds.WaveformSequence = Sequence([waveform])
    return ds


def pdf_document(**fields: Any) -> Dataset:
    """A report from another system, as Encapsulated PDF."""
    ds = _no_image(_base(EncapsulatedPDFStorage, "DOC", 1, 1, **fields))
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.DocumentTitle = "Echo report"
    ds.BurnedInAnnotation = "YES"
    ds.ConceptNameCodeSequence = Sequence()
    body = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    ds.EncapsulatedDocument = body + (b"\0" if len(body) % 2 else b"")
    return ds


def endoscopy_video(stream: bytes | None = None, **fields: Any) -> Dataset:
    """An endoscopy clip: Video Endoscopic Image Storage, MPEG-4 AVC/H.264 High Profile
    Level 4.1. The receiver never decodes a video, so the stream here is opaque bytes in
    the shape of an H.264 byte stream (start codes), split over two fragments as a
    console's encoder may deliver it."""
    ds = _base(VideoEndoscopicImageStorage, "ES", 1080, 1920, transfer_syntax_uid=MPEG4HP41, **fields)
    _eight_bit(ds, 3, "YBR_PARTIAL_420")
    ds.NumberOfFrames = 50
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 40.0
    ds.CineRate = 25
    ds.LossyImageCompression = "01"
    stream = stream or b"".join(b"\x00\x00\x00\x01" + bytes([0x65, n]) + bytes(range(256)) * 4 for n in range(50))
    half = len(stream) // 2 + (len(stream) // 2) % 2
    ds.PixelData = encapsulate([stream[:half], stream[half:]], has_bot=False)
    encapsulated(ds)
    return ds


def with_trailing_elements(ds: Dataset) -> Dataset:
    """What signing consoles and some archives append after Pixel Data: a Digital
    Signatures Sequence (FFFA,FFFA) and Data Set Trailing Padding (FFFC,FFFC)."""
    signature = Dataset()
    signature.MACIDNumber = 1
    signature.DigitalSignatureUID = "1.2.3.4.5.6"
    signature.DigitalSignatureDateTime = "20250901101500"
    signature.CertificateType = "X509_1993_SIG"
    signature.CertificateOfSigner = b"\x30\x82" + b"\x01" * 30
    signature.Signature = b"\x5a" * 64
    ds.DigitalSignaturesSequence = Sequence([signature])
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 256)
    return ds


def default_syntax(ds: Dataset) -> str:
    return str(ds.file_meta.TransferSyntaxUID) if "file_meta" in ds else str(ExplicitVRLittleEndian)
