"""The one number format of every page, export and PDF, in both languages: thousands
separated by commas (62,317; Django's Chinese locale groups by four with no separator, so
its localisation is not used), a fixed number of decimals rounded half up, and "-" where
there is no figure. billing.formatting builds money and shares on it."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

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
