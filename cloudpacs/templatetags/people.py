"""Template filters for showing people: {{ patient|person_name }}, {{ patient.sex|sex }}."""

from __future__ import annotations

from typing import Any

from django import template

from cloudpacs.personname import format_person_name, sex_label

register = template.Library()


@register.filter
def person_name(value: Any) -> str:
    """A patient, or a PN value as text, in the active language; "—" when there is none."""
    return format_person_name(value, empty="—")


@register.filter
def sex(value: Any) -> str:
    return sex_label(value)
