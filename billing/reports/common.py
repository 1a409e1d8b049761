"""What the reports share: money and number formatting, township order, partial periods."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Max, Min

from billing import formatting, hanyin
from billing.models import (
    DailyRollup,
)
from billing.reports.filters import Filters, month_end
from facilities.models import Facility

ZERO = Decimal("0.00")
ONE_DAY = timedelta(days=1)
WAN = Decimal(10000)
CENT = Decimal("0.01")


def money(value: Decimal | None) -> Decimal:
    """A sum of money to the fen; SQLite's sums come back without a scale."""
    return (value or ZERO).quantize(CENT)


def fixed(value: float | None, places: int = 2) -> str:
    """A number to `places` decimals in the pages' one format (billing.formatting: its
    shortest decimal form rounded half up, thousands separated), "" for None."""
    if value is None:
        return ""
    return formatting.number(value, places)


def wan(yuan: Decimal) -> Decimal:
    """Yuan in 万元 (ten thousand yuan), by the one rule of billing.formatting."""
    return formatting.to_wan(yuan)


# ---------------------------------------------------------------------------- partial periods


def recorded_span() -> tuple[date, date] | None:
    """The first and last exam date the platform has recorded (any township, any kind):
    a year or month outside it, or cut by it, holds only part of its days' exams."""
    found = DailyRollup.objects.aggregate(first=Min("day"), last=Max("day"))
    if found["first"] is None:
        return None
    return found["first"], found["last"]


def period_bounds(key: str) -> tuple[date, date]:
    """The first and last day of a period key: "2025", "2025-Q3" or "2025-09"."""
    if "-Q" in key:
        year, quarter = (int(x) for x in key.split("-Q"))
        first = date(year, 3 * (quarter - 1) + 1, 1)
        return first, month_end(date(year, 3 * quarter, 1))
    if "-" in key:
        year, month = (int(x) for x in key.split("-"))
        return date(year, month, 1), month_end(date(year, month, 1))
    return date(int(key), 1, 1), date(int(key), 12, 31)


def partial_periods(keys: Iterable[str], filters: Filters) -> dict[str, tuple[date, date]]:
    """The periods of `keys` that the page covers only in part, with the days it covers:
    cut by the date filter, or by the first or last exam recorded (the demo's history stops
    at 2025-09-28, so its 2025 is nine months)."""
    span = recorded_span()
    if span is None:
        return {}
    low = max(span[0], filters.date_from or span[0])
    high = min(span[1], filters.date_to or span[1])
    partial = {}
    for key in keys:
        first, last = period_bounds(key)
        covered = (max(first, low), min(last, high))
        if covered != (first, last) and covered[0] <= covered[1]:
            partial[key] = covered
    return partial


def township_order(facilities: Iterable[Facility]) -> list[Facility]:
    """The paper's row order (Table 2) for the Hanyin townships, then the rest by pinyin."""
    rank = {t.code: i for i, t in enumerate(hanyin.TOWNSHIPS)}
    return sorted(facilities, key=lambda f: (rank.get(f.code, len(rank)), f.pinyin, f.pk))
