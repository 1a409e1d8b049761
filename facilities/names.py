"""One order for lists of names, the same on PostgreSQL and SQLite: Chinese names by their
pinyin (李 before 刘 before 王), as a Chinese reader looks for them, not by code point
(which puts 刘 before 李 and 王 before 张 by chance); Latin names among them by their
letters. Neither database has it built in (PostgreSQL has an ICU collation, zh-x-icu,
only where it was built with ICU; SQLite has none), so lists are sorted in Python."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django import forms
from django.forms.models import ModelChoiceIterator


def pinyin_key(text: str) -> tuple[str, str]:
    """The sort key of a name: its pinyin with tone numbers (李明远 -> "li3 ming2 yuan3"),
    lower case, then the name as written (two names read alike stay in one order).

    The tone digit ends each syllable, so "li3" comes before "liu2" and "lin2" as in a
    dictionary; characters without a reading (Latin letters, digits) are kept as written."""
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(text or "", style=Style.TONE3, neutral_tone_with_five=True)
    return " ".join(syllables).lower(), text or ""


def by_pinyin(items: Any, name: Any = str) -> list[Any]:
    """`items` sorted by the pinyin of `name(item)` (its str by default)."""
    return sorted(items, key=lambda item: pinyin_key(name(item)))


class PinyinChoiceIterator(ModelChoiceIterator):
    def __iter__(self) -> Iterator[Any]:
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        for obj in by_pinyin(self.queryset):
            yield self.choice(obj)


class PinyinModelChoiceField(forms.ModelChoiceField):
    """A list of people (or anything named) ordered by pinyin instead of the queryset's order."""

    iterator = PinyinChoiceIterator
