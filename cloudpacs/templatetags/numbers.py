"""{{ n|num }}: a count as every page prints it (cloudpacs.numbers: 62,317 in both
languages), {{ minutes|num:1 }} to one decimal."""

from __future__ import annotations

from decimal import Decimal

from django import template

from cloudpacs.numbers import number

register = template.Library()


@register.filter
def num(value: Decimal | float | int | None, places: int = 0) -> str:
    return number(value, int(places))
