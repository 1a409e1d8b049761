"""The values the index reads from a received dataset, converted from the elements' bytes
as pydicom would convert them, without pydicom's DataElement and value classes.

pydicom converts an element through its hooks, its per-VR converter, a value class (UID,
IS, PersonName) that validates the value by regular expression in its WARN mode and
only warns, and a DataElement that validates it again: most of the time the receiver
spent on a small image's tags (docs/benchmarks-ingest.md, run 30, helper h27cpu2). The
index needs plain text and numbers. Here each value the index reads is taken from its raw
element when its bytes are of a shape whose conversion is certain (text without an escape
sequence that its character set decodes, a UID, a date, one binary number, an integer
string written as int() writes it); anything else is `FALLBACK`, and the caller converts
that element through pydicom as before. tests/test_tagvalues.py compares both on edge
cases (character sets, trailing spaces and NULs, several values, empty values, person
names with ideographic groups, invalid values).

The other elements of a dataset are decoded only to refuse one that cannot be: in
pydicom's WARN mode most conversions cannot fail (text is decoded with replacement
characters, a number string that does not parse is kept as text), and `surely_decodable`
says so from the element's VR and length alone; the rest are converted by pydicom.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

# What an element's conversion returns when this module is not certain of pydicom's.
FALLBACK: Any = object()

ESC = b"\x1b"
UNDEFINED_LENGTH = 0xFFFFFFFF

# pydicom's converters by VR, grouped by what they do with the bytes (pydicom.values).
# Decoded with the default encoding (latin-1), split on backslashes, trailing spaces and
# NULs removed from the whole value: convert_string and convert_UI (and DA, DT and TM
# while config.datetime_conversion is off).
LATIN1_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
# Decoded with the dataset's character set, split, each value's trailing spaces and NULs
# removed (convert_text); or one value (convert_single_string).
TEXT_VRS = frozenset({"SH", "LO", "UC"})
SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})
# Binary numbers: struct format and size.
NUMBER_VRS = {"US": ("H", 2), "SS": ("h", 2), "UL": ("L", 4), "SL": ("l", 4), "FL": ("f", 4), "FD": ("d", 8)}
# The rest that cannot fail: bytes kept as they are (AE and UR decode as latin-1).
BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "AE", "UR"})
SIZED_VRS = {**{vr: size for vr, (_, size) in NUMBER_VRS.items()}, "AT": 4, "SV": 8, "UV": 8}

# An IS value that pydicom converts to an int written as int() writes it (spaces around
# it, no plus sign, no leading zero: pydicom's IS keeps its text, which str() gives); an
# IS or DS value it converts without raising (digits, a sign, a plain decimal, an exponent
# of at most two digits: no overflow).
PLAIN_IS = re.compile(rb" *(-?[1-9][0-9]{0,17}|0) *")
PLAIN_IS_VALUES = re.compile(rb"( *[+-]?[0-9]+ *)(\\ *[+-]?[0-9]+ *)*[ \x00]*")
PLAIN_DS_VALUES = re.compile(
    rb"( *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})? *)"
    rb"(\\ *[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})? *)*[ \x00]*"
)


def lean() -> bool:
    """Whether pydicom is configured as this module assumes (its defaults): invalid values
    warned of, not refused; dates, times and number strings kept as pydicom's text and
    int classes; empty text values empty strings."""
    return (
        config.settings.reading_validation_mode != config.RAISE
        and not config.datetime_conversion
        and not config.use_IS_numpy
        and not config.use_DS_numpy
        and not config.use_none_as_empty_text_VR_value
    )


def _split(text: str) -> Any:
    values = text.split("\\")
    return values[0] if len(values) == 1 else MultiValue(str, values)


def _decoded(data: bytes, encodings: str | Sequence[str]) -> str | None:
    """pydicom's decode_bytes where it decodes with the first encoding only (no escape
    sequence) and the bytes are valid in it; None otherwise. `encodings` as the dataset's
    `_character_set` gives them: a list, or one name when it has no Specific Character Set."""
    if ESC in data:
        return None
    try:
        return data.decode(encodings if isinstance(encodings, str) else encodings[0])
    except (UnicodeError, LookupError):
        return None


def _name_text(data: bytes, encodings: str | Sequence[str]) -> str | None:
    """A PN value's one value as pydicom's convert_PN decodes it, or None (several values,
    or not decoded as pydicom would)."""
    text = _decoded(data.rstrip(b"\x00 "), encodings)
    return None if text is None or "\\" in text else text


def element_vr(raw: RawDataElement) -> str | None:
    """The VR pydicom gives a raw element when that is certain: the explicit VR (not UN,
    which pydicom may replace with the dictionary's), or the dictionary's for a public
    tag read in implicit VR when it is not ambiguous."""
    vr = raw.VR
    if vr is None:
        if raw.tag & 0x10000:
            return None
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
        if " " in vr:
            return None
    return None if vr == "UN" else vr


def value(raw: RawDataElement, encodings: str | Sequence[str]) -> Any:
    """The value pydicom's Dataset gives for `raw` (a top-level element, as read, not
    deferred), or FALLBACK. Several values come as pydicom's MultiValue of str."""
    vr = element_vr(raw)
    if vr is None or raw.length == UNDEFINED_LENGTH:
        return FALLBACK
    data = raw.value
    if data is None:
        return FALLBACK
    if not data:
        if vr == "PN":
            return PersonName("")
        if vr in LATIN1_VRS or vr in TEXT_VRS or vr in SINGLE_TEXT_VRS:
            return ""
        if vr in NUMBER_VRS or vr == "IS":
            return None
        return FALLBACK
    if vr == "UI":
        # pydicom's UID strips each value of its spaces at both ends too.
        uids = data.decode("latin-1").rstrip(" \x00").split("\\")
        return uids[0].strip() if len(uids) == 1 else MultiValue(str, [uid.strip() for uid in uids])
    if vr in LATIN1_VRS:
        return _split(data.decode("latin-1").rstrip(" \x00"))
    if vr in TEXT_VRS:
        text = _decoded(data, encodings)
        if text is None:
            return FALLBACK
        values = [item.rstrip("\x00 ") for item in text.split("\\")]
        return values[0] if len(values) == 1 else MultiValue(str, values)
    if vr == "PN":
        text = _name_text(data, encodings)
        return FALLBACK if text is None else PersonName(text)
    if vr in NUMBER_VRS:
        form, size = NUMBER_VRS[vr]
        if len(data) != size or not raw.is_little_endian:
            return FALLBACK
        return struct.unpack("<" + form, data)[0]
    if vr == "IS":
        digits = data.rstrip(b" \x00")
        if not PLAIN_IS.fullmatch(digits):
            return FALLBACK
        return int(digits)
    return FALLBACK


def person_name(raw: RawDataElement, encodings: str | Sequence[str]) -> tuple[str, str, str] | None:
    """(alphabetic, ideographic, phonetic) of a PN element with one value, as pydicom's
    PersonName gives them, or None when pydicom must say (several values, an escape
    sequence, bytes its character set does not decode)."""
    if element_vr(raw) != "PN" or raw.value is None or raw.length == UNDEFINED_LENGTH:
        return None
    text = _name_text(raw.value, encodings)
    if text is None:
        return None
    groups = text.split("=")
    groups += [""] * (3 - len(groups))
    return groups[0], groups[1], groups[2]


def surely_decodable(raw: RawDataElement) -> bool:
    """Whether pydicom converts `raw` (an element as read, not deferred) without raising,
    in its WARN mode, without converting it. False means: not known, convert it. A private
    element counts only with its VR written (explicit VR): read in implicit VR its VR comes
    from pydicom's private dictionary; storing it converts its creator's LO value, which
    cannot fail either."""
    vr = element_vr(raw)
    if vr is None or raw.length == UNDEFINED_LENGTH or (raw.tag & 0x10000 and raw.VR is None):
        return False
    data = raw.value
    if data is None:
        return False
    if vr in LATIN1_VRS or vr in BYTES_VRS:
        return True
    if vr in TEXT_VRS or vr in SINGLE_TEXT_VRS:
        # Decoded with replacement characters at worst; an escape sequence is pydicom's.
        return ESC not in data
    size = SIZED_VRS.get(vr)
    if size is not None:
        return len(data) % size == 0
    if vr == "IS":
        return not data or PLAIN_IS_VALUES.fullmatch(data) is not None
    if vr == "DS":
        return not data or PLAIN_DS_VALUES.fullmatch(data) is not None
    if vr == "PN":
        return data.isascii() and ESC not in data
    return False
