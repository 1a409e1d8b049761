"""Year over year and month over month: exams and savings of each period beside the same
period a year before and the period before, with their growth.

The counts are the volume page's (consults not cancelled, by exam date) and the savings
page's (ledger entries by exam date, reversals included), read from the same rollup. A
period's bases are read whatever the date filter, so January's month-over-month compares
with December even when the filter starts in January. Growth is blank, never infinite,
when its base is 0 or not recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Sum
from django.db.models.functions import TruncMonth

from billing.reports.common import money, partial_periods
from billing.reports.filters import Filters, rollup_parts

HUNDRED = Decimal(100)
TENTH = Decimal("0.1")


def growth_percent(value: Decimal | int, base: Decimal | int | None) -> Decimal | None:
    """(value - base) / base in per cent, to 0.1, rounded half up; None when the base is
    0 or missing (growth from nothing is not a number)."""
    if base is None or base == 0:
        return None
    change = (Decimal(value) - Decimal(base)) / abs(Decimal(base)) * HUNDRED
    return change.quantize(TENTH, rounding=ROUND_HALF_UP)


@dataclass
class GrowthRow:
    """One period: its value, the same period a year before and the period before (None
    where nothing is recorded), and the growth over each."""

    key: str  # "2025" or "2025-03"
    value: Decimal | int
    year_before: Decimal | int | None
    period_before: Decimal | int | None
    partial: tuple[date, date] | None = None  # the days the page covers of a partial period
    base_partial: bool = False  # a base period is itself only partly recorded

    @property
    def label(self) -> str:
        return self.key

    @property
    def year_over_year(self) -> Decimal | None:
        return growth_percent(self.value, self.year_before)

    @property
    def period_over_period(self) -> Decimal | None:
        return growth_percent(self.value, self.period_before)


@dataclass
class Growth:
    """Exams and savings by year and by month. Savings are left empty for a caller that
    may not see money (`with_savings=False`)."""

    exams_by_year: list[GrowthRow]
    exams_by_month: list[GrowthRow]
    savings_by_year: list[GrowthRow]
    savings_by_month: list[GrowthRow]


def _monthly(filters: Filters, column: str) -> dict[str, Any]:
    """The rollup's `column` summed by month of the exam date ("2025-03"); whole months
    from the per-township months (a ninth of the monthly rows: no radiologist is asked)."""
    totals: dict[str, Any] = {}
    for rows, date_field in rollup_parts(filters, by_radiologist=False):
        for r in rows.annotate(period=TruncMonth(date_field)).values("period").annotate(total=Sum(column)).order_by():
            key = f"{r['period']:%Y-%m}"
            totals[key] = totals.get(key, 0) + (r["total"] or 0)
    return totals


def _previous_month(key: str) -> str:
    year, month = (int(x) for x in key.split("-"))
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


def _rows(
    shown: dict[str, Any], every: dict[str, Any], by: str, filters: Filters, convert: Callable[[Any], Any]
) -> list[GrowthRow]:
    """The rows of the periods `shown` (the filters' own totals), with bases from `every`
    (the same totals without the date filter). `by` is "year" or "month"."""

    def per(period: str, totals: dict[str, Any]) -> dict[str, Any]:
        if period == "month":
            return totals
        years: dict[str, Any] = {}
        for key, value in totals.items():
            years[key[:4]] = years.get(key[:4], 0) + value
        return years

    values, bases = per(by, shown), per(by, every)
    keys = sorted(values)
    partial = partial_periods(keys, filters)
    recorded = partial_periods(list(bases), Filters())  # cut by the first or last exam recorded
    rows = []
    for key in keys:
        year_before = f"{int(key[:4]) - 1}{key[4:]}"
        before = _previous_month(key) if by == "month" else year_before
        row = GrowthRow(
            key,
            convert(values[key]),
            convert(bases[year_before]) if year_before in bases else None,
            convert(bases[before]) if before in bases else None,
            partial.get(key),
            base_partial=year_before in recorded or before in recorded,
        )
        rows.append(row)
    return rows


def growth(filters: Filters, *, with_savings: bool = True) -> Growth:
    """Exams and savings by year and month with year-over-year and period-over-period
    growth, for the township, kind and dates of the filters."""
    undated = Filters(None, None, filters.facility, filters.kind, filters.radiologist)
    exams, exams_every = _monthly(filters, "exams"), _monthly(undated, "exams")
    exams = {k: v for k, v in exams.items() if v}
    count = int
    result = Growth(
        exams_by_year=_rows(exams, exams_every, "year", filters, count),
        exams_by_month=_rows(exams, exams_every, "month", filters, count),
        savings_by_year=[],
        savings_by_month=[],
    )
    if with_savings:
        entries = _monthly(filters, "ledger_entries")
        saved = {k: v for k, v in _monthly(filters, "saving").items() if entries.get(k)}
        saved_every = _monthly(undated, "saving")
        result.savings_by_year = _rows(saved, saved_every, "year", filters, money)
        result.savings_by_month = _rows(saved, saved_every, "month", filters, money)
    return result
