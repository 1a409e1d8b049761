"""One number format for every billing page and export label: thousands separated by
commas, a fixed number of decimals rounded half up, and money in 万元 by one rule.

Pages call these through the template filters of `billing.templatetags.figures`
(`num`, `yuan`, `wan`); views that format in Python (a province's turnaround table has
1,100 rows) call them directly, so a number looks the same wherever it is printed."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cloudpacs.numbers import NONE, number

__all__ = ["NONE", "number", "percent", "place_name", "to_wan", "wan", "yuan"]

WAN = Decimal(10000)
CENT = Decimal("0.01")


def to_wan(yuan: Decimal | int) -> Decimal:
    """Yuan in 万元 (ten thousand yuan), to the cent of a 万元, rounded half up: the one
    rule every page and export follows (831,454 yuan -> 83.15 万元)."""
    return (Decimal(yuan) / WAN).quantize(CENT, rounding=ROUND_HALF_UP)


def yuan(value: Decimal | int | None) -> str:
    return number(value, 2)


def wan(value: Decimal | int | None) -> str:
    """Yuan shown in 万元: 831,454.00 -> "83.15"."""
    return NONE if value is None else number(to_wan(value), 2)


def percent(share: float | None) -> str:
    """A share (0.873) as a percentage to one decimal, as the turnaround page prints it: "87.3 %"."""
    return NONE if share is None else f"{number(share * 100, 1)} %"


def place_name(facility: Any, language: str) -> str:
    """A facility's short name in Chinese, its pinyin in English (where it has one)."""
    if facility is None:
        return NONE
    short_name_in = getattr(facility, "short_name_in", None)
    return short_name_in(language) if short_name_in is not None else str(facility)
