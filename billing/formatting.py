"""One number format for every billing page and export label: thousands separated by
commas, a fixed number of decimals rounded half up, and money in 万元 by one rule.

Pages call these through the template filters of `billing.templatetags.figures`
(`num`, `yuan`, `wan`); views that format in Python (a province's turnaround table has
1,100 rows) call them directly, so a number looks the same wherever it is printed."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

WAN = Decimal(10000)
CENT = Decimal("0.01")
NONE = "-"


def _decimal(value: Decimal | float | int, places: int) -> Decimal:
    exact = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)
    rounded = exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return rounded if rounded else abs(rounded)  # no "-0.00"


def number(value: Decimal | float | int | None, places: int = 0, *, grouped: bool = True) -> str:
    """`value` to `places` decimals, thousands separated: 831454 -> "831,454",
    Decimal("831454") with 2 places -> "831,454.00". None (no figure) -> "-"."""
    if value is None or value == "":
        return NONE
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return NONE
    rounded = _decimal(value, places)
    return f"{rounded:,.{places}f}" if grouped else f"{rounded:.{places}f}"


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
    pinyin: str = getattr(facility, "pinyin", "") or ""
    if language.startswith("en") and pinyin:
        return pinyin
    short_name: str = getattr(facility, "short_name", "") or ""
    return short_name or str(facility)
