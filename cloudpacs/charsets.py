"""GB 2312 with code extensions (Specific Character Set `\\ISO 2022 IR 58`) for pydicom.

pydicom 3.0 maps ISO 2022 IR 58 to Python's `iso_ir_58` codec and counts it among the
encodings whose escape sequences Python handles itself (as it does for iso2022_jp). But
`iso_ir_58` is plain GB 2312 in its EUC-CN form: decoding leaves the G1 designation
`ESC $ ) A` in the text as three printable characters after an ESC, and encoding writes
none. So every text value of such a dataset, not only the Patient's Name, came out of
pydicom with escape characters in it (Study Description, Institution Name, Referring
Physician's Name...), and went that way into the index, WADO-RS metadata, QIDO-RS and
C-FIND answers.

`install()` (called once from CloudpacsConfig.ready, so in every process) registers a
codec that does what pydicom expects of a handled encoding, and points pydicom's table
for ISO 2022 IR 58 and for the escape sequence at it:

- decoding drops the designations (`ESC $ ) A`, and `ESC ( B`, the return of ASCII to G0)
  and decodes the rest as GB 2312: once G1 is designated, its characters have their high
  bits set, which is the EUC-CN form (PS3.5 6.1.2.5.3, Annex K);
- encoding writes `ESC $ ) A` before the Chinese text of a value, again after each delimiter
  that ends the designation (PS3.5 6.1.2.5.3: `^` and `=` in a person name, `\\` between
  values, line and form feeds, tabs); pure ASCII is written as it is.

pydicom's own behaviour for every other character set is left as it is."""

from __future__ import annotations

import codecs
import re

import pydicom.charset

CODEC = "yunying_iso2022_ir58"
ESC_GB2312_G1 = b"\x1b$)A"
ESC_ASCII_G0 = b"\x1b(B"
SPECIFIC_CHARACTER_SET = "ISO 2022 IR 58"
_DELIMITERS = re.compile(r"([\^=\\\r\n\t\f])")


def decode(data: bytes, errors: str = "strict", /) -> tuple[str, int]:
    raw = bytes(data)
    text = raw.replace(ESC_GB2312_G1, b"").replace(ESC_ASCII_G0, b"").decode("gb2312", errors)
    return text, len(raw)


def encode(text: str, errors: str = "strict", /) -> tuple[bytes, int]:
    encoded = bytearray()
    for piece in _DELIMITERS.split(text):
        # ASCII before the first Chinese character stays in G0 without a designation.
        first = next((index for index, char in enumerate(piece) if not char.isascii()), len(piece))
        encoded += piece[:first].encode("ascii")
        if first < len(piece):
            encoded += ESC_GB2312_G1 + piece[first:].encode("gb2312", errors)
    return bytes(encoded), len(text)


def _search(name: str) -> codecs.CodecInfo | None:
    if name != CODEC:
        return None
    # codecs hands decode any buffer (bytes, memoryview); bytes() below copes with each.
    return codecs.CodecInfo(encode=encode, decode=decode, name=CODEC)  # type: ignore[arg-type]


_installed = False


def install() -> None:
    """Make pydicom decode and encode ISO 2022 IR 58 through CODEC (idempotent)."""
    global _installed
    if _installed:
        return
    codecs.register(_search)
    pydicom.charset.python_encoding[SPECIFIC_CHARACTER_SET] = CODEC
    pydicom.charset.CODES_TO_ENCODINGS[ESC_GB2312_G1] = CODEC
    pydicom.charset.ENCODINGS_TO_CODES[CODEC] = ESC_GB2312_G1
    handled: tuple[str, ...] = pydicom.charset.handled_encodings
    if CODEC not in handled:
        pydicom.charset.handled_encodings = (*handled, CODEC)  # type: ignore[assignment]
    _installed = True
