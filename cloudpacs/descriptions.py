"""Study and series descriptions on the pages of another language than the console's.

A description (StudyDescription, SeriesDescription) is free text the township's console
writes, in Chinese on Chinese consoles ("胸部 CT", "头颅 平扫 5mm", "右膝关节正侧位"). There is
no English field to fill for it: it comes with each study, not from a record an
administrator keeps, as a facility's English name does. So the English pages follow one
rule: a description made only of words the platform knows (the body-part vocabulary and
the words consoles use for techniques and views) is shown in English, word by word
("Chest CT", "Head non-contrast 5mm"); anything else is shown as the console wrote it, with
nothing half translated. Stored and sent DICOM keeps the original: this is for display only."""

from __future__ import annotations

import re

from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import get_language, pgettext_lazy

from cloudpacs.models import BodyPart

# The words of technique, contrast, view and side that consoles write besides the part
# (in their own context: 常规 is "routine" here, and 检查 "exam", whatever they are elsewhere).
TERMS: dict[str, Promise] = {
    "平扫": pgettext_lazy("description", "平扫"),
    "增强": pgettext_lazy("description", "增强"),
    "平扫+增强": pgettext_lazy("description", "平扫+增强"),
    "正位": pgettext_lazy("description", "正位"),
    "侧位": pgettext_lazy("description", "侧位"),
    "正侧位": pgettext_lazy("description", "正侧位"),
    "斜位": pgettext_lazy("description", "斜位"),
    "双斜位": pgettext_lazy("description", "双斜位"),
    "左": pgettext_lazy("description", "左"),
    "右": pgettext_lazy("description", "右"),
    "双侧": pgettext_lazy("description", "双侧"),
    "薄层": pgettext_lazy("description", "薄层"),
    "重建": pgettext_lazy("description", "重建"),
    "三维重建": pgettext_lazy("description", "三维重建"),
    "血管成像": pgettext_lazy("description", "血管成像"),
    "常规": pgettext_lazy("description", "常规"),
    "急诊": pgettext_lazy("description", "急诊"),
    "复查": pgettext_lazy("description", "复查"),
    "检查": pgettext_lazy("description", "检查"),
}

# Ideographs, and the punctuation of Chinese text, that make a description untranslated.
_CHINESE = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


# The vocabulary's names, read once a process: its rows are shipped and changed by
# migrations only, which a running process does not see happen.
_PART_NAMES: dict[str, str] = {}


def english_words(language: str = "en") -> dict[str, str]:
    """Each Chinese word the rule knows -> its English (`language`: which English)."""
    if not _PART_NAMES:
        _PART_NAMES.update(
            {part.name_zh: part.name_en for part in BodyPart.objects.all() if part.name_zh and part.name_en}
        )
    with translation.override(language):
        terms = {chinese: str(english) for chinese, english in TERMS.items()}
    return {**_PART_NAMES, **terms}


def description_in(text: str, language: str | None = None) -> str:
    """`text` as a page in `language` (the active one when not given) shows it: as written
    on a Chinese page, or written without Chinese; in English where each Chinese word of it
    is one the rule knows, else as written."""
    language = (language or get_language() or "zh-hans").lower()
    if not text or not language.startswith("en") or not _CHINESE.search(text):
        return text
    words = english_words(language)
    # The longest word first: 胸椎 (thoracic spine) before 胸 alone, 正侧位 before 正位. A
    # word inside the phrase is in lower case (Right knee frontal, not Right Knee Frontal).
    pattern = re.compile("|".join(re.escape(word) for word in sorted(words, key=len, reverse=True)))
    english = pattern.sub(lambda match: f" {_lower_first(words[match.group(0)])} ", text)
    english = english.replace("、", ", ").replace("，", ", ")
    if _CHINESE.search(english):
        return text
    english = " ".join(english.split()).replace(" ,", ",")
    return english[:1].upper() + english[1:]


def _lower_first(word: str) -> str:
    # "Chest" -> "chest"; an acronym (CT, 3D) is kept.
    return word[:1].lower() + word[1:] if word[1:2].islower() else word
