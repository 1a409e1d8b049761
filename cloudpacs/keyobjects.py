"""The reader's key images and measurements as DICOM objects kept in the study, so that any
viewer (OHIF, Weasis, RadiAnt) sees them beside the images:

- a Key Object Selection Document (KOS, PS3.3 A.35.4; template TID 2010, title
  (113000, DCM, "Of Interest") of CID 7010) listing the key images, each with a reference
  to the presentation state that carries its measurements;
- a Grayscale Softcopy Presentation State (GSPS, PS3.3 A.33.1) whose graphic annotations
  are the measurements, in image pixel coordinates per referenced image: a length as a
  two-point POLYLINE, an angle as a three-point POLYLINE, an elliptical ROI as an ELLIPSE,
  each with its value as a text object.

A GSPS rather than a Comprehensive SR (TID 1500): what the reader wants back is the drawing
on the image, which every viewer shows from a GSPS; TID 1500's measurement groups carry
numbers with codes, which few viewers draw. The values themselves go with the drawings as
text, as the reader saw them.

Pure functions of pydicom datasets: the archive's services (cloudpacs.services) read the
referenced images, call these, and store the results through the ingest path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
MANUFACTURER = "Yunying"
CHARACTER_SET = "ISO_IR 192"
# Series numbers far above a console's, so that the objects sort after the images.
KOS_SERIES_NUMBER = 9901
GSPS_SERIES_NUMBER = 9902
LAYER = "MEASUREMENTS"

# The measurement tools (the viewer's Cornerstone3D names), the points each has and the
# GSPS graphic type it becomes.
TOOLS = {"Length": (2, "POLYLINE"), "Angle": (3, "POLYLINE"), "EllipticalROI": (4, "ELLIPSE")}

PATIENT_KEYWORDS = [
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
]
# Type 2 (present, perhaps empty) in both IODs.
REQUIRED_EMPTY = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"]
STUDY_KEYWORDS = [
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
]
STUDY_REQUIRED_EMPTY = ["StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"]


@dataclass(frozen=True)
class ImageRef:
    """One frame of an archived image, with what a presentation state needs of it."""

    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    # 1-based; `multi_frame` says whether the reference names it (Referenced Frame Number).
    frame: int
    multi_frame: bool
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None = None


@dataclass(frozen=True)
class Measurement:
    tool: str
    image: ImageRef
    # (column, row) in image pixel coordinates: (0, 0) the top left corner of the top left
    # pixel, as PS3.3 C.10.5.1.2 puts GSPS PIXEL units.
    points: tuple[tuple[float, float], ...]
    text: str = ""


@dataclass(frozen=True)
class Author:
    """Who made the objects: the radiologist, as a Person Name value, and when."""

    name: str
    when: datetime


def person_name(display_name: str) -> str:
    """A user's display name as a PN value. One in Latin letters is the alphabetic group;
    one in Chinese characters the ideographic group, its first character the family name
    (王^明), with its pinyin as the alphabetic group (Wang^Ming=王^明), as consoles write
    patients' names and as viewers without CJK fonts can still show it."""
    name = "".join(display_name.replace("^", " ").replace("=", " ").split())[:30]
    if not name or name.isascii():
        return display_name.replace("^", " ").replace("=", " ").strip()[:60]
    from pypinyin import lazy_pinyin

    family, given = name[0], name[1:]

    def pinyin(text: str) -> str:
        return "".join(lazy_pinyin(text, errors="ignore")).capitalize()

    alphabetic = "^".join(filter(None, [pinyin(family), pinyin(given)]))
    ideographic = "^".join(filter(None, [family, given]))
    return f"{alphabetic}={ideographic}" if alphabetic else f"={ideographic}"


def _copy(source: Dataset, target: Dataset, keywords: Iterable[str], required: Iterable[str]) -> None:
    for keyword in keywords:
        value = source.get(keyword)
        if value is None or value == "":
            continue
        if keyword.endswith("Sequence"):
            setattr(target, keyword, value)
        else:
            # Decoded with the image's own character set; written again in UTF-8.
            setattr(target, keyword, str(value) if not isinstance(value, list | tuple) else value)
    for keyword in required:
        if keyword not in target:
            setattr(target, keyword, "")


def _base(source: Dataset, sop_class: str, modality: str, series_uid: str, series_number: int,
          instance_number: int, author: Author, description: str) -> Dataset:  # fmt: skip
    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate = author.when.strftime("%Y%m%d")
    ds.InstanceCreationTime = author.when.strftime("%H%M%S")
    _copy(source, ds, PATIENT_KEYWORDS, REQUIRED_EMPTY)
    _copy(source, ds, STUDY_KEYWORDS, STUDY_REQUIRED_EMPTY)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance_number
    ds.Manufacturer = MANUFACTURER
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _image_item(image: ImageRef) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.sop_class_uid
    item.ReferencedSOPInstanceUID = image.sop_instance_uid
    if image.multi_frame:
        item.ReferencedFrameNumber = image.frame
    return item


def _by_series(images: Iterable[ImageRef]) -> dict[str, list[ImageRef]]:
    grouped: dict[str, list[ImageRef]] = {}
    for image in images:
        if image not in grouped.setdefault(image.series_uid, []):
            grouped[image.series_uid].append(image)
    return grouped


def _anchor(measurement: Measurement) -> list[float]:
    # The value sits by the drawing's last point (a length's end, an angle's far arm).
    x, y = measurement.points[-1]
    return [float(x), float(y)]


def _ellipse_axes(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cornerstone's four ellipse points (bottom, top, left, right) as PS3.3 wants them:
    the major axis' end points first, then the minor axis'."""
    first, second = list(points[:2]), list(points[2:4])

    def length(pair: list[tuple[float, float]]) -> float:
        (x1, y1), (x2, y2) = pair
        return float((x1 - x2) ** 2 + (y1 - y2) ** 2)

    return first + second if length(first) >= length(second) else second + first


def build_gsps(source: Dataset, measurements: Sequence[Measurement], *, series_uid: str, instance_number: int,
               author: Author, modality_lut: Dataset | None = None, inverse: bool = False) -> Dataset:  # fmt: skip
    """The presentation state whose graphic annotations are `measurements`. `source` is
    one of the study's images (patient and study attributes are copied from it);
    `modality_lut` its rescale (Rescale Intercept, Slope, Type), required by the IOD when
    the images have one; `inverse` for MONOCHROME1 images."""
    ds = _base(source, GSPS_CLASS, "PR", series_uid, GSPS_SERIES_NUMBER, instance_number, author, "阅片测量")
    # General Series (Type 2C): the measurements may span both sides.
    ds.Laterality = ""
    ds.PresentationCreationDate = ds.InstanceCreationDate
    ds.PresentationCreationTime = ds.InstanceCreationTime
    ds.ContentLabel = LAYER
    ds.ContentDescription = "Measurements"
    ds.ContentCreatorName = author.name
    images = [m.image for m in measurements]
    series_items = []
    for uid, refs in _by_series(images).items():
        item = Dataset()
        item.SeriesInstanceUID = uid
        item.ReferencedImageSequence = [_image_item(ref) for ref in refs]
        series_items.append(item)
    ds.ReferencedSeriesSequence = series_items
    # Displayed Area: the whole image, one item per image size (and pixel spacing).
    areas: dict[tuple[int, int, tuple[float, float] | None], list[ImageRef]] = {}
    for image in dict.fromkeys(images):
        areas.setdefault((image.rows, image.columns, image.pixel_spacing), []).append(image)
    area_items = []
    for (rows, columns, spacing), refs in areas.items():
        item = Dataset()
        if len(areas) > 1:
            item.ReferencedImageSequence = [_image_item(ref) for ref in refs]
        item.DisplayedAreaTopLeftHandCorner = [1, 1]
        item.DisplayedAreaBottomRightHandCorner = [columns, rows]
        item.PresentationSizeMode = "SCALE TO FIT"
        if spacing:
            item.PresentationPixelSpacing = list(spacing)
        else:
            item.PresentationPixelAspectRatio = [1, 1]
        area_items.append(item)
    ds.DisplayedAreaSelectionSequence = area_items
    layer = Dataset()
    layer.GraphicLayer = LAYER
    layer.GraphicLayerOrder = 1
    layer.GraphicLayerDescription = "阅片测量"
    ds.GraphicLayerSequence = [layer]
    annotations = []
    for image in dict.fromkeys(images):
        item = Dataset()
        item.ReferencedImageSequence = [_image_item(image)]
        item.GraphicLayer = LAYER
        graphics, texts = [], []
        for measurement in (m for m in measurements if m.image == image):
            count, kind = TOOLS[measurement.tool]
            points = list(measurement.points)
            if kind == "ELLIPSE":
                points = _ellipse_axes(points)
            graphic = Dataset()
            graphic.GraphicAnnotationUnits = "PIXEL"
            graphic.GraphicDimensions = 2
            graphic.NumberOfGraphicPoints = count
            graphic.GraphicData = [float(value) for point in points for value in point]
            graphic.GraphicType = kind
            if kind == "ELLIPSE":
                # Required for a closed graphic only.
                graphic.GraphicFilled = "N"
            graphics.append(graphic)
            if measurement.text:
                text = Dataset()
                text.UnformattedTextValue = measurement.text
                text.AnchorPointAnnotationUnits = "PIXEL"
                text.AnchorPoint = _anchor(measurement)
                text.AnchorPointVisibility = "N"
                texts.append(text)
        item.GraphicObjectSequence = graphics
        if texts:
            item.TextObjectSequence = texts
        annotations.append(item)
    ds.GraphicAnnotationSequence = annotations
    if modality_lut is not None:
        ds.RescaleIntercept = modality_lut.RescaleIntercept
        ds.RescaleSlope = modality_lut.RescaleSlope
        ds.RescaleType = modality_lut.get("RescaleType") or "US"
    ds.PresentationLUTShape = "INVERSE" if inverse else "IDENTITY"
    return ds


def build_kos(source: Dataset, key_images: Sequence[ImageRef], *, series_uid: str, instance_number: int,
              author: Author, gsps: Dataset | None = None) -> Dataset:  # fmt: skip
    """The key object selection (TID 2010) of `key_images`; an image that `gsps` annotates
    refers to it, so that a viewer shows the key image with its measurements."""
    if not key_images:
        raise ValueError("a key object selection needs at least one image")
    ds = _base(source, KOS_CLASS, "KO", series_uid, KOS_SERIES_NUMBER, instance_number, author, "关键图像")
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    annotated: set[tuple[str, int]] = set()
    if gsps is not None:
        for annotation in gsps.GraphicAnnotationSequence:
            for ref in annotation.ReferencedImageSequence:
                annotated.add((ref.ReferencedSOPInstanceUID, int(ref.get("ReferencedFrameNumber") or 1)))
    evidence_images = list(key_images)
    study = Dataset()
    study.StudyInstanceUID = ds.StudyInstanceUID
    series_items = []
    for uid, refs in _by_series(evidence_images).items():
        series = Dataset()
        series.SeriesInstanceUID = uid
        sops = list(dict.fromkeys((ref.sop_class_uid, ref.sop_instance_uid) for ref in refs))
        series.ReferencedSOPSequence = [_sop(cls, uid_) for cls, uid_ in sops]
        series_items.append(series)
    if gsps is not None:
        series = Dataset()
        series.SeriesInstanceUID = gsps.SeriesInstanceUID
        series.ReferencedSOPSequence = [_sop(GSPS_CLASS, gsps.SOPInstanceUID)]
        series_items.append(series)
    study.ReferencedSeriesSequence = series_items
    ds.CurrentRequestedProcedureEvidenceSequence = [study]
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("113000", "DCM", "Of Interest")]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = [template]
    content = []
    observer_type = Dataset()
    observer_type.RelationshipType = "HAS OBS CONTEXT"
    observer_type.ValueType = "CODE"
    observer_type.ConceptNameCodeSequence = [_code("121005", "DCM", "Observer Type")]
    observer_type.ConceptCodeSequence = [_code("121006", "DCM", "Person")]
    content.append(observer_type)
    observer = Dataset()
    observer.RelationshipType = "HAS OBS CONTEXT"
    observer.ValueType = "PNAME"
    observer.ConceptNameCodeSequence = [_code("121008", "DCM", "Person Observer Name")]
    observer.PersonName = author.name
    content.append(observer)
    description = Dataset()
    description.RelationshipType = "CONTAINS"
    description.ValueType = "TEXT"
    description.ConceptNameCodeSequence = [_code("113012", "DCM", "Key Object Description")]
    description.TextValue = "阅片关键图像"
    content.append(description)
    for image in dict.fromkeys(key_images):
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        reference = _image_item(image)
        if gsps is not None and (image.sop_instance_uid, image.frame) in annotated:
            reference.ReferencedSOPSequence = [_sop(GSPS_CLASS, gsps.SOPInstanceUID)]
        item.ReferencedSOPSequence = [reference]
        content.append(item)
    ds.ContentSequence = content
    return ds


def _sop(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def encode(ds: Dataset) -> bytes:
    """The bare dataset in Explicit VR Little Endian, as the ingest service takes a stream."""
    buffer = BytesIO()
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


# Reading them back (ours or another viewer's), for the viewer to show again.


@dataclass(frozen=True)
class KeyImage:
    sop_instance_uid: str
    frame: int


@dataclass(frozen=True)
class Drawn:
    tool: str
    sop_instance_uid: str
    frame: int
    points: list[list[float]]
    text: str


def read_kos(ds: Dataset) -> list[KeyImage]:
    found = []
    for item in ds.get("ContentSequence") or []:
        if item.get("ValueType") != "IMAGE":
            continue
        for reference in item.get("ReferencedSOPSequence") or []:
            frames = reference.get("ReferencedFrameNumber")
            frame = int(frames[0] if isinstance(frames, list | tuple) or _is_multi(frames) else frames or 1)
            found.append(KeyImage(str(reference.ReferencedSOPInstanceUID), frame))
    return found


def _is_multi(value: Any) -> bool:
    return type(value).__name__ == "MultiValue"


def read_gsps(ds: Dataset) -> list[Drawn]:
    """The PIXEL-unit polylines and ellipses of a presentation state, as the viewer's tools:
    two points a length, three an angle, an ellipse an elliptical ROI; other graphics
    (and DISPLAY units) are not the viewer's to redraw. The text nearest a graphic's
    anchor, if any, goes with it."""
    drawn = []
    for annotation in ds.get("GraphicAnnotationSequence") or []:
        texts = [
            (list(map(float, text.AnchorPoint)), str(text.get("UnformattedTextValue") or ""))
            for text in annotation.get("TextObjectSequence") or []
            if text.get("AnchorPointAnnotationUnits") == "PIXEL" and text.get("AnchorPoint")
        ]
        for reference in annotation.get("ReferencedImageSequence") or []:
            frames = reference.get("ReferencedFrameNumber")
            frame = int(frames[0] if _is_multi(frames) or isinstance(frames, list) else frames or 1)
            for graphic in annotation.get("GraphicObjectSequence") or []:
                if graphic.get("GraphicAnnotationUnits") != "PIXEL":
                    continue
                data = [float(value) for value in graphic.GraphicData]
                points = [data[i : i + 2] for i in range(0, len(data) - 1, 2)]
                kind = graphic.get("GraphicType")
                if kind == "POLYLINE" and len(points) == 2:
                    tool = "Length"
                elif kind == "POLYLINE" and len(points) == 3:
                    tool = "Angle"
                elif kind == "ELLIPSE" and len(points) == 4:
                    tool = "EllipticalROI"
                    points = _cornerstone_ellipse(points)
                else:
                    continue
                text = next((t for anchor, t in texts if any(_near(anchor, point) for point in points)), "")
                drawn.append(Drawn(tool, str(reference.ReferencedSOPInstanceUID), frame, points, text))
    return drawn


def _near(a: list[float], b: list[float]) -> bool:
    return abs(a[0] - b[0]) < 0.01 and abs(a[1] - b[1]) < 0.01


def _cornerstone_ellipse(points: list[list[float]]) -> list[list[float]]:
    """Two axes' end points as Cornerstone's (bottom, top, left, right): the axis that runs
    more up and down gives top and bottom."""
    first, second = points[:2], points[2:4]
    if abs(first[0][1] - first[1][1]) < abs(second[0][1] - second[1][1]):
        first, second = second, first
    top, bottom = sorted(first, key=lambda p: p[1])
    left, right = sorted(second, key=lambda p: p[0])
    return [bottom, top, left, right]
