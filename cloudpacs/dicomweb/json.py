"""The DICOM JSON model (PS3.18 F.2): elements built from the index for QIDO-RS, and
whole datasets read from the stored files for /metadata, with bulk data left behind a
BulkDataURI."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import date, time
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID

logger = logging.getLogger("cloudpacs.dicomweb")

Element = dict[str, Any]
JsonDataset = dict[str, Element]

PIXEL_DATA = "7FE00010"
BULK_THRESHOLD = 4096
# How a stored metadata document names its bulk data: relative to the instance's URL.
RELATIVE_BULK = "bulkdata/"
_BULK_KEY = '"BulkDataURI":"'


def element(vr: str, *values: Any) -> Element:
    """An element with its non-empty values; an empty one has no "Value" (F.2.5)."""
    kept = [value for value in values if value not in (None, "")]
    if not kept:
        return {"vr": vr}
    return {"vr": vr, "Value": kept}


def da(value: date | None) -> Element:
    return element("DA", value.strftime("%Y%m%d") if value else None)


def tm(value: time | None) -> Element:
    return element("TM", value.strftime("%H%M%S") if value else None)


def integer(vr: str, value: int | None) -> Element:
    return element(vr, value)


def multi(vr: str, backslashed: str) -> Element:
    return element(vr, *[value for value in backslashed.split("\\") if value])


def person_name(alphabetic: str = "", ideographic: str = "", phonetic: str = "") -> Element:
    """A PN value as its component groups (F.2.2): {"Alphabetic": .., "Ideographic": ..}."""
    groups = {"Alphabetic": alphabetic, "Ideographic": ideographic, "Phonetic": phonetic}
    value = {name: text for name, text in groups.items() if text}
    return {"vr": "PN", "Value": [value]} if value else {"vr": "PN"}


def person_name_from_whole(whole: str) -> Element:
    groups = ([*whole.split("="), "", ""])[:3]
    return person_name(*groups)


def tag_key(keyword_or_tag: str) -> str | None:
    """'StudyDate', '00080020' or '0008,0020' -> '00080020', or None when unknown."""
    text = keyword_or_tag.strip().replace(",", "").replace("(", "").replace(")", "")
    if len(text) == 8 and all(ch in "0123456789abcdefABCDEF" for ch in text):
        return text.upper()
    try:
        tag = Tag(keyword_or_tag.strip())
    except (ValueError, TypeError):
        return None
    return f"{tag:08X}"


def dataset_json(ds: Dataset) -> JsonDataset:
    """`ds` as DICOM JSON (F.2), element by element with pydicom's converter, mended where
    it strays from F.2: Group Length (gggg,0000) elements, which older equipment still
    writes, are left out (F.2.2); a sequence of no items has no "Value" (pydicom writes an
    empty list, F.2.5), and an empty value among the values of a DS or IS is null (pydicom
    fails on it, and the whole element, or the sequence holding it, was left out)."""
    result: JsonDataset = {}
    for elem in ds:
        if elem.tag.element == 0:
            continue
        key = f"{elem.tag:08X}"
        if elem.VR == "SQ":
            items = [dataset_json(item) for item in elem.value or []]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        try:
            result[key] = elem.to_json_dict(None, 2**62)
        except Exception as exc:
            numbers = _number_strings(elem)
            if numbers is None:
                logger.warning("metadata: element %s (%s) cannot be written as JSON: %s", key, elem.VR, exc)
                continue
            result[key] = numbers
    return result


def _number_strings(elem: DataElement) -> Element | None:
    """A DS or IS element as JSON numbers, an empty value as null; None for anything else."""
    if elem.VR not in ("DS", "IS"):
        return None
    values = list(elem.value) if elem.VM > 1 else [elem.value]
    convert = float if elem.VR == "DS" else int
    try:
        numbers = [None if value in (None, "") else convert(value) for value in values]
    except (TypeError, ValueError):
        return None
    return {"vr": elem.VR, "Value": numbers} if any(number is not None for number in numbers) else {"vr": elem.VR}


def instance_metadata(path: str | BinaryIO, bulk_uri: Callable[[str], str], rows: int | None) -> JsonDataset:
    """The instance's dataset as DICOM JSON, read up to its pixel data. Top-level binary
    values over a few kilobytes, and the pixel data itself, are given as BulkDataURIs;
    binary values inside sequences (a VOI LUT's LUT Data, say) stay inline, since a viewer
    needs them to display the image and a URI can only name a top-level element."""
    ds = dcmread(path, stop_before_pixels=True)
    result = dataset_json(ds)
    for elem in ds:
        key = f"{elem.tag:08X}"
        if key in result and "InlineBinary" in result[key] and len(elem.value or b"") > BULK_THRESHOLD:
            result[key] = {"vr": result[key]["vr"], "BulkDataURI": bulk_uri(key)}
    transfer_syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    # Available Transfer Syntax UID (0008,3002): the transfer syntax the instance is
    # stored in, which a viewer needs to tell a video (MPEG) from frames it can decode.
    result["00083002"] = {"vr": "UI", "Value": [str(transfer_syntax)]}
    if rows or "Rows" in ds:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        vr = "OB" if transfer_syntax.is_compressed or bits <= 8 else "OW"
        result[PIXEL_DATA] = {"vr": vr, "BulkDataURI": bulk_uri(PIXEL_DATA)}
    # Attributes in ascending order of their tags (F.2.2): 00083002 was added last.
    return dict(sorted(result.items()))


def dumps(data: object) -> str:
    """JSON as every DICOMweb answer is written: UTF-8 text, no spaces."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def metadata_document(path: str | BinaryIO, rows: int | None) -> str:
    """instance_metadata as stored JSON text, its BulkDataURIs relative ("bulkdata/<tag>")
    so that the text holds for any host the archive is reached by."""
    return dumps(instance_metadata(path, lambda tag: f"{RELATIVE_BULK}{tag}", rows))


def with_instance_url(document: str, instance_url: str) -> str:
    """A stored document with its BulkDataURIs made absolute. The text '"BulkDataURI":"'
    can only be a key: inside a JSON string its quotes would be escaped."""
    escaped = json.dumps(instance_url, ensure_ascii=False)[1:-1]
    return document.replace(_BULK_KEY + RELATIVE_BULK, f"{_BULK_KEY}{escaped}/{RELATIVE_BULK}")


def json_array(documents: Iterable[str]) -> str:
    return "[" + ",".join(documents) + "]"
