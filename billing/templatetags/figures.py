"""The dashboards' numbers, formatted once (billing.formatting):
{{ n|num }} a count, {{ minutes|num:1 }} a figure to one decimal, {{ saving|yuan }} money
in yuan, {{ saving|wan }} money in 万元, {{ facility|place }} a township's name in the
page's language."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils.translation import get_language

from billing import formatting

register = template.Library()


@register.filter
def num(value: Decimal | float | int | None, places: int = 0) -> str:
    return formatting.number(value, int(places))


@register.filter
def yuan(value: Decimal | int | None) -> str:
    return formatting.yuan(value)


@register.filter
def wan(value: Decimal | int | None) -> str:
    return formatting.wan(value)


@register.filter
def percent(share: float | None) -> str:
    return formatting.percent(share)


@register.filter
def place(facility: Any) -> str:
    """A facility's short name in Chinese, its pinyin in English (where it has one)."""
    return formatting.place_name(facility, get_language() or "")
