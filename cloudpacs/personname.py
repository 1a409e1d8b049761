"""How people are shown: one Person Name formatter and one sex label for pages, the PDF,
exports and the viewer's overlay.

A DICOM PN value has up to three groups, alphabetic=ideographic=phonetic, each of up to
five components family^given^middle^prefix^suffix (PS3.5 6.2.1). Shown in Chinese, a
name is its ideographic group with no separators (吴^超 -> 吴超); shown in English, it is
its alphabetic group with the components separated by spaces, family name first, as
Chinese names are written in pinyin ("Wu Chao"; Western names are filed the same way in
a PACS, so the order is the value's own). Each falls back to the other group, then to the
phonetic one, then to the raw text. Stored and sent DICOM keeps the original value: this
is for display only."""

from __future__ import annotations

import re
from typing import Protocol

from django.utils import translation
from django.utils.translation import gettext as _

# CJK ideographs (unified, extension A, compatibility), kana and Hangul syllables: a group
# written in these is joined without spaces, as the script is written.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


class NamedPatient(Protocol):
    name: str
    name_alphabetic: str
    name_ideographic: str
    name_phonetic: str


def _components(group: str) -> list[str]:
    # family, given, middle; a prefix (Dr.) or suffix (Jr.) is not part of the name on a report.
    return [part.strip() for part in group.split("^")[:3] if part.strip()]


def _join(group: str) -> str:
    parts = _components(group)
    if not parts:
        return ""
    if all(_CJK.search(part) for part in parts):
        return "".join(parts)
    return " ".join(parts)


def groups_of(value: str) -> tuple[str, str, str]:
    """(alphabetic, ideographic, phonetic) of a PN value as text."""
    parts = (value or "").split("=")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def format_person_name(value: str | NamedPatient | None, language: str | None = None, *, empty: str = "") -> str:
    """A PN value (text, or a patient with its decoded groups) as a reader expects it.

    `language` defaults to the active one; anything but English is shown the Chinese way."""
    if value is None:
        return empty
    if isinstance(value, str):
        alphabetic, ideographic, phonetic = groups_of(value)
        raw = value
    else:
        alphabetic, ideographic, phonetic = value.name_alphabetic, value.name_ideographic, value.name_phonetic
        raw = value.name
        if not (alphabetic or ideographic or phonetic) and raw:
            alphabetic, ideographic, phonetic = groups_of(raw)
    language = (language or translation.get_language() or "zh-hans").lower()
    order = (alphabetic, ideographic, phonetic) if language.startswith("en") else (ideographic, alphabetic, phonetic)
    for group in order:
        shown = _join(group)
        if shown:
            return shown
    cleaned = " ".join(re.sub(r"[\^=]+", " ", raw or "").split())
    return cleaned or empty


SEX_CODES = ("M", "F", "O")


def sex_label(code: str | None, *, empty: str = "—") -> str:
    """PatientSex (M, F, O) in the active language; an unknown code as written."""
    value = (code or "").strip().upper()
    if value == "M":
        return _("男")
    if value == "F":
        return _("女")
    if value == "O":
        return _("其他")
    return (code or "").strip() or empty


def name_initials(alphabetic: str, ideographic: str) -> str:
    """The initials a technologist types to find a patient: 吴^超 -> "wc".

    From the ideographic group, each character's pinyin initial (pypinyin, its most common
    reading: a surname read differently, 单 as Shan, gets the common reading's letter);
    else from the alphabetic group's family and given names, each word's first letter
    (Wu^Chao -> "wc", Ouyang^Xiu Ying -> "oxy"). Lower case; "" when neither gives any."""
    written = "".join(_components(ideographic))
    if written:
        from pypinyin import Style, lazy_pinyin

        letters = [
            syllable[0] for syllable in lazy_pinyin(written, style=Style.FIRST_LETTER, errors="ignore") if syllable
        ]
        initials = "".join(letter for letter in letters if letter.isascii() and letter.isalpha())
        if initials:
            return initials.lower()[:32]
    words = [word for part in _components(alphabetic) for word in re.split(r"[\s\-]+", part) if word]
    return "".join(word[0] for word in words if word[0].isascii() and word[0].isalpha()).lower()[:32]
