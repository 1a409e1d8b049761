"""The Native DICOM Model (PS3.19 A.1), the XML form of an instance's metadata that
PS3.18 Table 10.4.4-1 requires beside DICOM JSON: `multipart/related;
type="application/dicom+xml"`, one part per instance. It is written from the instance's
DICOM JSON document (F.2), which holds the same attributes, so both answers say the same
thing and no file is opened for either."""

from __future__ import annotations

import re
from html import escape
from typing import Any

from pydicom.datadict import keyword_for_tag

DICOM_XML = "application/dicom+xml"
PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
PERSON_NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
# Characters XML 1.0 cannot carry, even escaped; a DICOM text value should not hold them.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    return escape(NOT_XML.sub("", str(value)), quote=True)


def dataset_xml(document: dict[str, Any]) -> str:
    """One instance's DICOM JSON document as a NativeDicomModel document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<NativeDicomModel xml:space="preserve">{_attributes(document)}</NativeDicomModel>\n'
    )


def _attributes(dataset: dict[str, Any]) -> str:
    creators: dict[tuple[int, int], str] = {}
    for tag, element in dataset.items():
        group, number = int(tag[:4], 16), int(tag[4:], 16)
        if group % 2 and 0x10 <= number <= 0xFF and element.get("Value"):
            creators[(group, number)] = str(element["Value"][0])
    out = []
    for tag, element in dataset.items():
        vr = element.get("vr", "UN")
        group, number = int(tag[:4], 16), int(tag[4:], 16)
        head = f'tag="{tag}" vr="{vr}"'
        if group % 2 == 0:
            keyword = keyword_for_tag(int(tag, 16))
            if keyword:
                head += f' keyword="{keyword}"'
        elif number >= 0x1000 and (group, number >> 8) in creators:
            head += f' privateCreator="{_text(creators[(group, number >> 8)])}"'
        out.append(f"<DicomAttribute {head}>{_content(vr, element)}</DicomAttribute>")
    return "".join(out)


def _content(vr: str, element: dict[str, Any]) -> str:
    if "BulkDataURI" in element:
        return f'<BulkData uri="{_text(element["BulkDataURI"])}"/>'
    if "InlineBinary" in element:
        return f"<InlineBinary>{_text(element['InlineBinary'])}</InlineBinary>"
    values = element.get("Value", [])
    if vr == "SQ":
        return "".join(f'<Item number="{n}">{_attributes(item or {})}</Item>' for n, item in enumerate(values, 1))
    if vr == "PN":
        return "".join(
            f'<PersonName number="{n}">{_person_name(value or {})}</PersonName>' for n, value in enumerate(values, 1)
        )
    return "".join(
        f'<Value number="{n}"/>' if value is None else f'<Value number="{n}">{_text(value)}</Value>'
        for n, value in enumerate(values, 1)
    )


def _person_name(value: dict[str, str]) -> str:
    """A PN value's component groups, each by its components (PS3.19 A.1.5)."""
    groups = []
    for group in PERSON_NAME_GROUPS:
        text = value.get(group)
        if not text:
            continue
        components = "".join(
            f"<{name}>{_text(part)}</{name}>"
            for name, part in zip(PERSON_NAME_COMPONENTS, text.split("^"), strict=False)
            if part
        )
        groups.append(f"<{group}>{components}</{group}>")
    return "".join(groups)
