"""What every report is restricted to, and the one place the restriction is spelled:
`Filters` gives it as Django Q objects for the consults, the ledger and the rollup, and as
SQL for the raw readers; `rollup_split`/`rollup_parts` choose the rollup rows of a range."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db.models import Q, QuerySet

from billing.models import (
    DailyRollup,
    MonthlyRollup,
    MonthlyTownshipRollup,
)
from facilities.models import Facility, User

ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Filters:
    """What every dashboard is restricted to. None means no restriction."""

    date_from: date | None = None
    date_to: date | None = None
    facility: Facility | None = None
    kind: str | None = None
    radiologist: User | None = None

    def terms(self, *, dates: bool = True, radiologist: bool = True) -> list[tuple[str, str, Any]]:
        """The restriction as (column, operator, value) terms: the one place the filters
        are spelled. The query builders below and the raw SQL readers all start here."""
        terms: list[tuple[str, str, Any]] = []
        if dates and self.date_from:
            terms.append(("exam_date", ">=", self.date_from))
        if dates and self.date_to:
            terms.append(("exam_date", "<=", self.date_to))
        if self.facility:
            terms.append(("facility_id", "=", self.facility.pk))
        if self.kind:
            terms.append(("kind", "=", self.kind))
        if radiologist and self.radiologist:
            terms.append(("radiologist_id", "=", self.radiologist.pk))
        return terms

    def q(self, *, prefix: str = "", kind: str = "kind", dates: bool = True, radiologist: bool = True) -> Q:
        """The terms as a Q object; `kind` names the model's exam-kind field."""
        lookups = {">=": "__gte", "<=": "__lte", "=": ""}
        q = Q()
        for column, op, value in self.terms(dates=dates, radiologist=radiologist):
            field = kind if column == "kind" else column
            q &= Q(**{f"{prefix}{field}{lookups[op]}": value})
        return q

    def sql(self, alias: str, *, dates: bool = True, radiologist: bool = True) -> tuple[list[str], list[Any]]:
        """The terms as SQL clauses on the table `alias` (its columns bear the same names)
        and their parameters, for the readers that fetch rows as binary records."""
        terms = self.terms(dates=dates, radiologist=radiologist)
        return [f"{alias}.{column} {op} %s" for column, op, _v in terms], [value for _c, _o, value in terms]

    def consult_q(self, prefix: str = "") -> Q:
        return self.q(prefix=prefix)

    def rollup_q(self) -> Q:
        """Township, kind and radiologist: the rollup's own dates are `rollup_parts`'."""
        return self.q(dates=False)

    def ledger_q(self) -> Q:
        """Ledger entries carry no radiologist; their kind is `exam_kind`."""
        return self.q(kind="exam_kind", radiologist=False)

    def consults_sql(self, *, signed_only: bool = True) -> tuple[str, list[Any]]:
        """The WHERE clause on `consults_consult c` of the consults that are not cancelled
        (and signed, with signed_only): the raw readers' selection."""
        from consults.models import Consult

        clauses, params = self.sql("c")
        head = ["c.signed_at IS NOT NULL", "c.status <> %s"] if signed_only else ["c.status <> %s"]
        return " AND ".join([*head, *clauses]), [Consult.Status.CANCELLED, *params]


@dataclass(frozen=True)
class RollupSplit:
    """Which rollup rows cover a date range: the monthly rows of the whole months inside it
    (bounds of `month`, None for open; no months at all if `months` is None) and the daily
    rows of the days left over at either end."""

    months: tuple[date | None, date | None] | None
    days: tuple[tuple[date, date], ...]


def month_end(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def rollup_split(date_from: date | None, date_to: date | None) -> RollupSplit:
    first_full = None if date_from is None else (date_from if date_from.day == 1 else month_end(date_from) + ONE_DAY)
    last_full = None
    if date_to is not None:
        last_full = date_to.replace(day=1)
        if date_to != month_end(date_to):
            last_full = (last_full - ONE_DAY).replace(day=1)
    if first_full is not None and last_full is not None and first_full > last_full:
        assert date_from is not None and date_to is not None
        return RollupSplit(None, ((date_from, date_to),))
    days = []
    if date_from is not None and first_full is not None and date_from < first_full:
        days.append((date_from, first_full - ONE_DAY))
    if date_to is not None and date_to != month_end(date_to):
        days.append((date_to.replace(day=1), date_to))
    return RollupSplit((first_full, last_full), tuple(days))


def rollup_parts(filters: Filters, *, by_radiologist: bool = True) -> list[tuple[QuerySet[Any], str]]:
    """The rollup rows of the filters, as (queryset, name of its date field): monthly rows
    for whole months, daily rows for the rest. With by_radiologist=False (a report that
    neither groups nor filters by radiologist) and no radiologist in the filters, the
    whole months come from the per-township months, which hold the volume, the signed
    exams and the ledger's totals only (MonthlyTownshipRollup)."""
    split = rollup_split(filters.date_from, filters.date_to)
    parts: list[tuple[QuerySet[Any], str]] = []
    if split.months is not None:
        q = filters.rollup_q()
        first, last = split.months
        if first is not None:
            q &= Q(month__gte=first)
        if last is not None:
            q &= Q(month__lte=last)
        townships = not by_radiologist and filters.radiologist is None
        parts.append(((MonthlyTownshipRollup if townships else MonthlyRollup).objects.filter(q), "month"))
    if split.days:
        days = Q()
        for first, last in split.days:
            days |= Q(day__gte=first, day__lte=last)
        parts.append((DailyRollup.objects.filter(filters.rollup_q() & days), "day"))
    return parts
