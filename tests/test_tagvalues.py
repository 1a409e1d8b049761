"""The index's own converters (cloudpacs.tagvalues) against pydicom's: the same value for
every element they convert, pydicom's own conversion for every element they do not, and
no element called decodable that pydicom refuses. Then the whole tag read, with and
without them, on edge-case datasets and on pydicom's own files."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from cloudpacs import services, storage, tagvalues
from tests.test_ingest_pydicom_files import FILES, request_values

LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}

CHARSETS = {
    b"": "",
    b"ISO_IR 100": "latin-1",
    b"ISO_IR 192": "utf-8",
    b"GB18030": "gb18030",
}

# (tag, VR, value bytes) of elements as consoles send them, odd ones included.
ASCII_CASES: list[tuple[int, str, bytes]] = [
    (0x00080018, "UI", b"1.2.840.10008.5.1.4.1.1.2\x00"),
    (0x00080018, "UI", b"1.2.3 "),
    (0x00080018, "UI", b" 1.2.3"),
    (0x00080018, "UI", b"1.2.3\\4.5.6"),
    (0x00080018, "UI", b"1.2.abc"),
    (0x00080018, "UI", b"\x00\x00"),
    (0x00080018, "UI", b""),
    (0x00080060, "CS", b"CT"),
    (0x00080060, "CS", b"CT \x00"),
    (0x00080060, "CS", b"  "),
    (0x00080060, "CS", b""),
    (0x00080008, "CS", b"ORIGINAL\\PRIMARY\\AXIAL "),
    (0x00080008, "CS", b"ORIGINAL\\\\AXIAL"),
    (0x00080008, "CS", b"lower case\\"),
    (0x00080020, "DA", b"20250901"),
    (0x00080020, "DA", b"20250901-20251001"),
    (0x00080020, "DA", b"-20251001"),
    (0x00080020, "DA", b"2025.09.01"),
    (0x00080020, "DA", b"20250901\\20250902"),
    (0x00080020, "DA", b"2025"),
    (0x00080020, "DA", b""),
    (0x00080030, "TM", b"101500.123456"),
    (0x00080030, "TM", b"1015"),
    (0x00080030, "TM", b"10:15:00"),
    (0x00080030, "TM", b"101500-1200 "),
    (0x00080030, "TM", b"25"),
    (0x00080030, "TM", b""),
    (0x00100040, "CS", b"M "),
    (0x00280010, "US", b"\x00\x02"),
    (0x00280010, "US", b"\xff\xff"),
    (0x00280010, "US", b"\x00\x02\x00\x02"),
    (0x00280010, "US", b"\x00\x02\x00"),
    (0x00280010, "US", b""),
    (0x00280010, "UL", b"\x00\x02\x00\x00\x00\x00"),
    (0x00280008, "IS", b"1"),
    (0x00280008, "IS", b" 12 "),
    (0x00200013, "IS", b"+3"),
    (0x00200013, "IS", b"-4"),
    (0x00200013, "IS", b"007"),
    (0x00200013, "IS", b"12\x00"),
    (0x00200013, "IS", b"1.0"),
    (0x00200013, "IS", b"1.5"),
    (0x00200013, "IS", b"1e3"),
    (0x00200013, "IS", b"abc"),
    (0x00200013, "IS", b"1A"),
    (0x00200013, "IS", b"  "),
    (0x00200013, "IS", b"1\\2"),
    (0x00200013, "IS", b"99999999999999"),
    (0x00200013, "IS", b""),
    (0x00200011, "IS", b"\\"),
    (0x00181150, "IS", b"120"),
    (0x00280030, "DS", b"0.5\\0.5 "),
    (0x00280030, "DS", b"1e999\\1"),
    (0x00280030, "DS", b"nan"),
    (0x00280030, "DS", b".5\\-2.E+02"),
    (0x00280030, "DS", b"0,5"),
    (0x00280030, "DS", b"12345678901234567890"),
    (0x00180050, "DS", b""),
    (0x00080090, "PN", b"Doe^John^^^"),
    (0x00080090, "PN", b"^^^^"),
    (0x00080090, "PN", b"="),
    (0x00080090, "PN", b"Doe^John=="),
    (0x00080090, "PN", b"a=b=c=d"),
    (0x00080090, "PN", b"A^B\\C^D"),
    (0x00080090, "PN", b"Doe^John \x00"),
    (0x00080090, "PN", b""),
    (0x00080054, "AE", b" STORESCP "),
    (0x00200032, "DS", b"-125.0\\-125.0\\10.5"),
    (0x00200037, "DS", b"1\\0\\0\\0\\1\\0"),
    (0x00281050, "DS", b"40 "),
    (0x00081030, "LO", b"CHEST  "),
    (0x00081030, "LO", b"  LEADING"),
    (0x00081030, "LO", b"A\\B \x00"),
    (0x00081030, "LO", b"\x00"),
    (0x00081030, "LO", b""),
    (0x00080050, "SH", b"ACC 1 "),
    (0x00104000, "LT", b"a note \\ with a backslash  "),
    (0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.2"),
    (0x00280009, "AT", b"\x08\x00\x18\x00"),
    (0x00280009, "AT", b"\x08\x00\x18"),
    (0x00181310, "US", b"\x00\x00\x00\x01\x00\x01\x00\x00"),
    (0x00189306, "FD", b"\x00" * 8),
    (0x00189306, "FD", b"\x00" * 7),
    (0x00089007, "CS", b"ORIGINAL\\PRIMARY\\AXIAL\\NONE"),
    (0x00091010, "LO", b"PRIVATE"),
    (0x00091011, "UL", b"\x00\x02\x00\x00\x00\x00"),
    (0x00091012, "IS", b"1.5"),
    (0x00091013, "UN", b"\x00\x02"),
]

# Text in each character set, as a console writes it: the value and its person names.
TEXT_CASES: list[tuple[bytes, int, str, str]] = [
    (b"ISO_IR 100", 0x00081030, "LO", "Thorax ärztlich  "),
    (b"ISO_IR 100", 0x00100010, "PN", "Müller^Hans"),
    (b"ISO_IR 192", 0x00080080, "LO", "漩涡镇中心卫生院"),
    (b"ISO_IR 192", 0x00100010, "PN", "Zhang^San=张^三"),
    (b"ISO_IR 192", 0x00100010, "PN", "Zhang^San=张^三=zhang^san "),
    (b"ISO_IR 192", 0x00100010, "PN", "=张三"),
    (b"ISO_IR 192", 0x00100010, "PN", "张^三\\李^四"),
    (b"ISO_IR 192", 0x00081030, "LO", "胸部\\平扫"),
    (b"GB18030", 0x00100010, "PN", "Wang^Wu=王^五"),
    (b"GB18030", 0x00080080, "LO", "漩涡镇卫生院 "),
    (b"GB18030", 0x00081030, "LO", "€ 胸部"),
    (b"", 0x00100010, "PN", "Zhang^San"),
]

# Bytes that the character set does not decode: pydicom replaces and warns.
INVALID_CASES: list[tuple[bytes, int, str, bytes]] = [
    (b"ISO_IR 192", 0x00081030, "LO", b"\xff\xfeCHEST"),
    (b"ISO_IR 192", 0x00100010, "PN", b"Zhang^\xe5\xbc"),
    (b"GB18030", 0x00100010, "PN", b"\x81"),
    (b"ISO_IR 192", 0x00081030, "LO", b"\x1b$)A\xd5\xc5"),
    (b"ISO 2022 IR 58", 0x00100010, "PN", b"Zhang^Xiaodong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab"),
]


def encode(elements: list[tuple[int, str, bytes]], implicit: bool) -> bytes:
    out = bytearray()
    for tag, vr, value in sorted(elements, key=lambda element: element[0]):
        if len(value) % 2:
            value += b" " if vr not in ("UI", "OB", "US", "AT", "FD") else b"\x00"
        group, element = tag >> 16, tag & 0xFFFF
        if implicit:
            out += struct.pack("<HHI", group, element, len(value))
        elif vr in LONG:
            out += struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value))
        else:
            out += struct.pack("<HH2sH", group, element, vr.encode(), len(value))
        out += value
    return bytes(out)


def raw_of(charset: bytes, tag: int, vr: str, value: bytes, implicit: bool = False) -> tuple[RawDataElement, list[str]]:
    elements = [(tag, vr, value)]
    if charset:
        elements.append((0x00080005, "CS", charset))
    ds = read_dataset(BytesIO(encode(elements, implicit)), implicit, True)
    # The length as written (odd values padded): pydicom reads the padded value too.
    return ds._dict[tag], ds._character_set


def pydicoms(raw: RawDataElement, encodings: list[str]) -> Any:
    return convert_raw_data_element(raw, encoding=encodings).value


def same_value(ours: Any, theirs: Any) -> None:
    assert ours == theirs
    assert isinstance(ours, MultiValue) == isinstance(theirs, MultiValue)
    assert (ours is None) == (theirs is None)
    assert services._text({"x": ours}, "x", 1000) == services._text({"x": theirs}, "x", 1000)
    assert services._int({"x": ours}, "x") == services._int({"x": theirs}, "x")
    assert services._date(ours) == services._date(theirs)
    assert services._time(ours) == services._time(theirs)


def check_element(raw: RawDataElement, encodings: list[str]) -> None:
    try:
        theirs = pydicoms(raw, encodings)
    except Exception:
        theirs = pytest  # a refusal: nothing of ours may say otherwise
    ours = tagvalues.value(raw, encodings) if not raw.tag & 0x10000 else tagvalues.FALLBACK
    if ours is not tagvalues.FALLBACK:
        assert theirs is not pytest
        same_value(ours, theirs)
    if tagvalues.surely_decodable(raw):
        assert theirs is not pytest
    if raw.VR == "PN" or (raw.VR is None and raw.tag in (0x00100010, 0x00080090)):
        groups = tagvalues.person_name(raw, encodings)
        if groups is not None:
            assert theirs is not pytest
            name = theirs if isinstance(theirs, PersonName) else PersonName(str(theirs))
            assert groups == (name.alphabetic, name.ideographic, name.phonetic)


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("case", ASCII_CASES, ids=lambda case: f"{case[0]:08X}-{case[1]}-{case[2]!r}")
def test_each_value_converted_is_pydicoms_and_nothing_pydicom_refuses_is_called_decodable(case, implicit):
    tag, vr, value = case
    for charset in CHARSETS:
        raw, encodings = raw_of(charset, tag, vr, value, implicit)
        check_element(raw, encodings)


@pytest.mark.parametrize("case", TEXT_CASES, ids=lambda case: f"{case[0].decode()}-{case[2]}-{case[3]}")
def test_text_in_each_character_set_converts_as_pydicom_converts_it(case):
    charset, tag, vr, text = case
    raw, encodings = raw_of(charset, tag, vr, text.encode(CHARSETS[charset] or "ascii"))
    check_element(raw, encodings)
    converted = tagvalues.value(raw, encodings) if vr != "PN" else tagvalues.person_name(raw, encodings)
    # Every case here is one the converters take on, but several person names.
    assert (converted is tagvalues.FALLBACK or converted is None) == ("\\" in text and vr == "PN")


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda case: f"{case[0].decode()}-{case[2]}-{case[3]!r}")
def test_bytes_a_character_set_does_not_decode_are_left_to_pydicom(case):
    charset, tag, vr, value = case
    raw, encodings = raw_of(charset, tag, vr, value)
    check_element(raw, encodings)
    assert tagvalues.value(raw, encodings) is tagvalues.FALLBACK
    assert tagvalues.person_name(raw, encodings) is None


def test_a_number_of_the_wrong_length_is_refused_as_before():
    raw, encodings = raw_of(b"", 0x00280010, "UL", b"\x00\x02\x00\x00\x00\x00")
    assert tagvalues.value(raw, encodings) is tagvalues.FALLBACK
    assert not tagvalues.surely_decodable(raw)
    with pytest.raises(Exception, match="even multiple"):
        pydicoms(raw, encodings)


# ------------------------------------------------------------------ the whole tag read


def indexed(ds_bytes: bytes, path: Path, monkeypatch, lean: bool) -> Any:
    """_read_indexed_tags on a staged file of these dataset bytes, with the converters
    or with pydicom alone: its IndexedTags, or the refusal's type and message."""
    monkeypatch.setattr(tagvalues, "lean", lambda: lean)
    meta = b"\x00" * 128 + b"DICM"
    body = b"".join(
        struct.pack("<HH2sH", 0x0002, element, b"UI", len(value)) + value
        for element, value in ((0x0003, b"1.2.3.4\x00"), (0x0010, b"1.2.840.10008.1.2.1\x00"))
    )
    meta += struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body
    path.write_bytes(meta + ds_bytes)
    try:
        ds = services._read_dataset(path, len(meta), "1.2.840.10008.1.2.1", "1.2.3.4")
        tags = services._read_indexed_tags(
            ds, path, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2.1", "dimse"
        )
    except services.IngestError as exc:
        return type(exc), str(exc)
    return tags


def same_tags(ours: Any, theirs: Any) -> None:
    if isinstance(theirs, tuple):
        assert ours == theirs
        return
    assert (ours.sop_class_uid, ours.sop_instance_uid, ours.study_uid, ours.series_uid) == (
        theirs.sop_class_uid,
        theirs.sop_instance_uid,
        theirs.study_uid,
        theirs.series_uid,
    )
    assert ours.names == theirs.names
    assert ours.values.keys() == theirs.values.keys()
    for keyword in ours.values:
        if keyword == "OtherPatientIDsSequence":
            assert ours.values[keyword] == theirs.values[keyword]
            continue
        same_value(ours.values[keyword], theirs.values[keyword])


IDENTITY = [
    (0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7"),
    (0x00080018, "UI", b"1.2.3.4"),
    (0x0020000D, "UI", b"1.2.3.4.1"),
    (0x0020000E, "UI", b"1.2.3.4.2"),
]

DATASETS: dict[str, list[tuple[int, str, bytes]]] = {
    "utf-8 names": [
        (0x00080005, "CS", b"ISO_IR 192"),
        (0x00100010, "PN", "Zhang^San=张^三".encode()),
        (0x00080090, "PN", "李^四=".encode()),
        (0x00080080, "LO", "漩涡镇中心卫生院".encode()),
        (0x00080060, "CS", b"CT"),
        (0x00200013, "IS", b" 7 "),
        (0x00080020, "DA", b"20250901-20250902"),
        (0x00080030, "TM", b"1015 "),
    ],
    "gb18030 names": [
        (0x00080005, "CS", b"GB18030"),
        (0x00100010, "PN", "Wang^Wu=王^五=wang^wu".encode("gb18030")),
        (0x00081030, "LO", "胸部平扫\\增强".encode("gb18030")),
        (0x00100020, "LO", b"ID\x00"),
    ],
    "latin-1, padding": [
        (0x00080005, "CS", b"ISO_IR 100"),
        (0x00100010, "PN", "Müller^Hans^^^ ".encode("latin-1")),
        (0x00100020, "LO", b"  P1 \x00"),
        (0x00080050, "SH", b""),
        (0x00200011, "IS", b""),
        (0x00100030, "DA", b"19600101\\19600102"),
    ],
    "ISO 2022 IR 58": [
        (0x00080005, "CS", b"\\ISO 2022 IR 58"),
        (0x00100010, "PN", b"Zhang^Xiaodong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="),
        (0x00080080, "LO", b"\x1b$)A\xd5\xc5\xd0\xa1"),
    ],
    "several character sets": [
        (0x00080005, "CS", b"ISO_IR 100\\ISO_IR 192"),
        (0x00100010, "PN", b"Doe^John"),
    ],
    "invalid utf-8": [
        (0x00080005, "CS", b"ISO_IR 192"),
        (0x00100010, "PN", b"Zhang^\xe5\xbc"),
        (0x00081030, "LO", b"\xff\xfe"),
    ],
    "odd numbers": [
        (0x00200013, "IS", b"1.5"),
        (0x00200011, "IS", b"abc"),
        (0x00280010, "US", b"\x00\x02\x00\x02"),
        (0x00280030, "DS", b"1e999\\1"),
        (0x00280008, "IS", b"2\\3"),
    ],
    "a number of the wrong length": [
        (0x00280011, "US", b"\x00\x02\x00"),
    ],
    "private elements": [
        (0x00090010, "LO", b"ACME 1.1"),
        (0x00091010, "LO", b"PRIVATE"),
        (0x00091011, "US", b"\x00\x02"),
        (0x00091012, "DS", b"1.5\\2"),
        (0x00091013, "IS", b"1.5"),
        (0x00191010, "SH", b"NO CREATOR"),
    ],
    "two numbers of the wrong length": [
        (0x00181310, "UL", b"\x00\x02\x00\x00\x00\x00"),
        (0x00280002, "UL", b"\x00\x02\x00\x00\x00\x00"),
    ],
    "a private number of the wrong length": [
        (0x00090010, "LO", b"ACME 1.1"),
        (0x00091011, "UL", b"\x00\x02\x00\x00\x00\x00"),
    ],
    "a private creator of the wrong length": [
        (0x00090010, "UL", b"\x00\x02\x00\x00\x00\x00"),
        (0x00091010, "LO", b"PRIVATE"),
    ],
    "a uid that is not one": [
        (0x00100010, "PN", b"A^B\\C^D"),
        (0x00080060, "CS", b"CT\\MR"),
    ],
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_the_tag_read_gives_what_pydicom_alone_gives(name, tmp_path, monkeypatch):
    elements = [*IDENTITY, *DATASETS[name]]
    if name == "a uid that is not one":
        elements = [element for element in elements if element[0] != 0x0020000E]
        elements.append((0x0020000E, "UI", b"1.2.3\\4.5"))
    data = encode(elements, implicit=False)
    ours = indexed(data, tmp_path / "a.dcm", monkeypatch, lean=True)
    theirs = indexed(data, tmp_path / "b.dcm", monkeypatch, lean=False)
    same_tags(ours, theirs)


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_pydicoms_files_give_the_same_tags_with_the_converters_and_without(path, monkeypatch):
    values = request_values(path)
    if values is None:
        return
    transfer_syntax, sop_class, sop_instance = values
    results = []
    for lean in (True, False):
        monkeypatch.setattr(tagvalues, "lean", lambda lean=lean: lean)
        staged = storage.stage(
            path, sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax_uid=transfer_syntax
        )
        try:
            ds = services._read_dataset(staged.path, staged.dataset_offset, transfer_syntax, sop_instance)
            results.append(
                services._read_indexed_tags(ds, staged.path, sop_class, sop_instance, transfer_syntax, "dimse")
            )
        except services.IngestError as exc:
            results.append((type(exc), str(exc)))
        finally:
            storage.discard(staged)
    same_tags(*results)


def test_a_ct_images_indexed_values_are_converted_without_pydicoms_elements(tmp_path, monkeypatch):
    """A CT image as set (a) of the ingest benchmark has it (UTF-8 names), with a console's
    private elements: every value the index reads, and every check of the others, without
    one pydicom DataElement converted."""
    converted: list[Any] = []

    def counted(raw: RawDataElement, *args: Any, **kwargs: Any) -> Any:
        converted.append(raw.tag)
        return convert_raw_data_element(raw, *args, **kwargs)

    monkeypatch.setattr(services, "convert_raw_data_element", counted)
    elements = [
        *IDENTITY,
        (0x00080005, "CS", b"ISO_IR 192"),
        (0x00080020, "DA", b"20250901"),
        (0x00080030, "TM", b"101500"),
        (0x00080050, "SH", b"P0"),
        (0x00080060, "CS", b"CT"),
        (0x00080080, "LO", "漩涡镇中心卫生院".encode()),
        (0x00081010, "SH", b"CT01"),
        # A console's private elements, their VR written (explicit VR).
        (0x00090010, "LO", b"GEMS_IDEN_01"),
        (0x00091001, "LO", b"CT_LIGHTSPEED"),
        (0x00091002, "SL", b"\x01\x00\x00\x00"),
        (0x00100010, "PN", "Zhang^San=张^三".encode()),
        (0x00100020, "LO", b"PROF00"),
        (0x00100030, "DA", b"19600101"),
        (0x00100040, "CS", b"M"),
        (0x00200011, "IS", b"1"),
        (0x00200013, "IS", b"1"),
        (0x00280002, "US", b"\x01\x00"),
        (0x00280004, "CS", b"MONOCHROME2"),
        (0x00280010, "US", b"\x02\x00"),
        (0x00280011, "US", b"\x02\x00"),
        (0x00280030, "DS", b"0.5\\0.5"),
        (0x00280100, "US", b"\x10\x00"),
        (0x00280101, "US", b"\x0c\x00"),
        (0x00280102, "US", b"\x0b\x00"),
        (0x00280103, "US", b"\x00\x00"),
        (0x7FE00010, "OW", b"\x00" * 8),
    ]
    tags = indexed(encode(elements, implicit=False), tmp_path / "ct.dcm", monkeypatch, lean=True)
    assert not isinstance(tags, tuple), tags
    assert converted == []
    assert tags.names["PatientName"] == ("Zhang^San=张^三", "Zhang^San", "张^三", "")
    assert (tags.values["InstanceNumber"], tags.values["Rows"], tags.values["InstitutionName"]) == (
        1,
        2,
        "漩涡镇中心卫生院",
    )
