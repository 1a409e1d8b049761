"""Template filters for the names pages show: {{ patient|person_name }},
{{ patient.sex|sex }}, and body parts in the page's language: {{ order.body_parts.all|part_names }}
(parts of the vocabulary), {{ consult.body_part_names|parts_text }} (names as written), and
a console's description in the page's language where it can be: {{ study.description|described }}."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template
from django.utils.translation import get_language

from cloudpacs.descriptions import description_in
from cloudpacs.models import BodyPart
from cloudpacs.orders import body_part_names, named_parts_in
from cloudpacs.personname import format_person_name, sex_label

register = template.Library()


@register.filter
def person_name(value: Any) -> str:
    """A patient, or a PN value as text, in the active language; "—" when there is none."""
    return format_person_name(value, empty="—")


@register.filter
def sex(value: Any) -> str:
    return sex_label(value)


@register.filter
def part_names(parts: Iterable[BodyPart]) -> str:
    """Parts of the vocabulary by their names in the active language (胸部、腹部; Chest, Abdomen)."""
    return body_part_names(parts, get_language() or "zh-hans")


@register.filter
def parts_text(text: str) -> str:
    """Body parts as a consult stores them (胸部、腹部) in the active language (Chest, Abdomen)."""
    return named_parts_in(text or "", get_language() or "zh-hans")


@register.filter
def described(text: str) -> str:
    """A study's or series' description as the console wrote it, in English on English
    pages where each word is one the platform knows (cloudpacs.descriptions)."""
    return description_in(text or "")
