"""Each radiologist's workload by month, weekday days, weekday nights and weekends apart,
with their turnaround; and the share signed within the time limit by priority and kind.

The rules are the workflow's and the turnaround page's: a consult counts once it is signed
and not cancelled, in the month of its exam date; its time runs from arrival to signature;
it is within the limit when signed by its stored `due_at` (billing.reports.measures).
A report's night or weekend is told by when it was signed, in local time (TIME_ZONE): a
weekend is Saturday or Sunday at any hour, a night is settings.REPORT_NIGHT_HOURS on a
weekday (by default 18:00 to 08:00), so the three columns add up to the month's reports.

Both figures are read from the rollup (billing.rollup: signing times as weekend counts and
weekday minutes, counts by priority), which is kept equal to the raw rows; `workload_raw`
and `within_limit_raw` compute them from the consults, the oracle the tests compare with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, ExtractHour, ExtractIsoWeekDay, ExtractMinute, TruncMonth
from django.utils import timezone

from billing import histogram
from billing.models import DailyRollup, MonthlyReaderTurnaround
from billing.reports.filters import Filters, rollup_parts, rollup_split
from consults.models import Consult, Priority
from facilities.models import ExamKind, User
from facilities.names import by_pinyin


def night_hours() -> tuple[int, int]:
    """The night as minutes after midnight of its start and end (settings.REPORT_NIGHT_HOURS)."""
    start, end = settings.REPORT_NIGHT_HOURS
    return int(start), int(end)


def night_label() -> str:
    start, end = night_hours()
    return f"{start // 60:02d}:{start % 60:02d}–{end // 60:02d}:{end % 60:02d}"


def _counted(filters: Filters) -> QuerySet[Consult]:
    """The consults the figures count: not cancelled, in the filters."""
    return Consult.objects.filter(filters.consult_q()).exclude(status=Consult.Status.CANCELLED)


def _one(condition: Q) -> Sum:
    return Sum(Case(When(condition, then=Value(1)), default=Value(0), output_field=IntegerField()))


WITHIN = Q(signed_at__isnull=False, due_at__isnull=False, signed_at__lte=F("due_at"))
CONSULT_TIME = ExpressionWrapper(F("signed_at") - F("arrived_at"), output_field=DurationField())


@dataclass
class Work:
    """Reports signed by one radiologist (or in one cell), and their turnaround."""

    signed: int = 0
    weekday_day: int = 0
    weekday_night: int = 0
    weekend: int = 0
    within_limit: int = 0
    minutes_total: float = 0.0  # arrival to signature, summed

    def add(self, other: Work) -> None:
        self.signed += other.signed
        self.weekday_day += other.weekday_day
        self.weekday_night += other.weekday_night
        self.weekend += other.weekend
        self.within_limit += other.within_limit
        self.minutes_total += other.minutes_total

    @property
    def mean_minutes(self) -> float | None:
        return self.minutes_total / self.signed if self.signed else None

    @property
    def within_percent(self) -> float | None:
        return self.within_limit / self.signed * 100 if self.signed else None


@dataclass
class RadiologistWork:
    radiologist: User
    months: dict[str, Work]  # "2025-03" -> the month's work
    total: Work = field(default_factory=Work)


@dataclass
class Workload:
    months: list[str]  # every month with a signed report, ascending
    radiologists: list[RadiologistWork]
    total: Work
    by_month: dict[str, Work]
    night: str  # "18:00–08:00"


def _minutes(value: timedelta | float | None) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds() / 60
    return float(value) / 60_000_000  # SQLite may hand back microseconds


def _assembled(per_radiologist: dict[int, dict[str, Work]]) -> Workload:
    people = by_pinyin(User.objects.filter(pk__in=per_radiologist))
    total = Work()
    by_month: dict[str, Work] = {}
    radiologists = []
    for person in people:
        months = per_radiologist[person.pk]
        line = RadiologistWork(person, months)
        for key, work in months.items():
            line.total.add(work)
            by_month.setdefault(key, Work()).add(work)
        total.add(line.total)
        radiologists.append(line)
    return Workload(sorted(by_month), radiologists, total, by_month, night_label())


def _at_night(minutes: np.ndarray) -> np.ndarray:
    start, end = night_hours()
    if start < end:
        return (minutes >= start) & (minutes < end)
    return (minutes >= start) | (minutes < end)


_WORK_COLUMNS = ("radiologist_id", "signed", "signed_weekend", "within_limit", "consult_sum", "weekday_signing")


def workload(filters: Filters) -> Workload:
    """Reports signed per radiologist and month, split into weekday days, weekday nights
    and weekends, with the mean consult time and the share within the time limit: from
    the rollup (the per-radiologist months when no township is asked for, else the monthly
    rows; the daily rows for the days at either end of a range). The night is counted
    from each row's weekday signing minutes, so it follows the setting as it stands."""
    parts: list[tuple[Any, str]] = []
    split = rollup_split(filters.date_from, filters.date_to)
    if filters.facility is None and split.months is not None:
        q = Q(signed__gt=0, radiologist__isnull=False) & filters.q(dates=False)
        first, last = split.months
        if first is not None:
            q &= Q(month__gte=first)
        if last is not None:
            q &= Q(month__lte=last)
        parts.append((MonthlyReaderTurnaround.objects.filter(q), "month"))
        if split.days:
            parts += _day_parts(filters, split.days)
    else:
        parts = rollup_parts(filters)
    rows: list[tuple[Any, ...]] = []
    for queryset, date_field in parts:
        rows += queryset.filter(signed__gt=0, radiologist__isnull=False).values_list(date_field, *_WORK_COLUMNS)
    per_radiologist: dict[int, dict[str, Work]] = {}
    if not rows:
        return _assembled(per_radiologist)
    blobs = [bytes(r[-1]) for r in rows]
    lengths = np.array([len(b) for b in blobs], dtype=np.int64) // histogram.RECORD.itemsize
    minutes, counts = histogram.keys_and_counts(b"".join(blobs))
    row_of = np.repeat(np.arange(len(rows)), lengths)
    at_night = np.where(_at_night(minutes.astype(np.int64)), counts, 0.0)
    nights = np.bincount(row_of, weights=at_night, minlength=len(rows)).round().astype(np.int64).tolist()
    for (day, radiologist, signed, weekend, within, consult_sum, _blob), night in zip(rows, nights, strict=True):
        months = per_radiologist.setdefault(radiologist, {})
        work = Work(signed, signed - weekend - night, night, weekend, within, consult_sum)
        months.setdefault(f"{day:%Y-%m}", Work()).add(work)
    return _assembled(per_radiologist)


def _day_parts(filters: Filters, days: tuple[tuple[date, date], ...]) -> list[tuple[QuerySet[Any], str]]:
    q = Q()
    for first, last in days:
        q |= Q(day__gte=first, day__lte=last)
    return [(DailyRollup.objects.filter(filters.rollup_q() & q), "day")]


def workload_raw(filters: Filters) -> Workload:
    """`workload` from the consults' raw rows: the oracle the tests hold the rollup's to."""
    tz = ZoneInfo(settings.TIME_ZONE)
    start, end = night_hours()
    minute_of_day = ExtractHour("signed_at", tzinfo=tz) * 60 + ExtractMinute("signed_at", tzinfo=tz)
    weekend = Q(signed_weekday__gte=6)
    if start < end:
        night = Q(signed_minute__gte=start, signed_minute__lt=end)
    else:
        night = Q(signed_minute__gte=start) | Q(signed_minute__lt=end)
    rows = (
        _counted(filters)
        .filter(signed_at__isnull=False, radiologist__isnull=False)
        .annotate(
            month=TruncMonth("exam_date"),
            signed_minute=minute_of_day,
            signed_weekday=ExtractIsoWeekDay("signed_at", tzinfo=tz),
        )
        .values("radiologist_id", "month")
        .annotate(
            signed=Count("id"),
            weekend=_one(weekend),
            weekday_night=_one(~weekend & night),
            within=_one(WITHIN),
            time=Coalesce(Sum(CONSULT_TIME), Value(timedelta(0))),
        )
        .order_by()
    )
    per_radiologist: dict[int, dict[str, Work]] = {}
    for r in rows:
        month = r["month"]
        key = f"{month:%Y-%m}" if isinstance(month, date) else str(month)[:7]
        work = Work(
            signed=r["signed"],
            weekday_night=r["weekday_night"] or 0,
            weekend=r["weekend"] or 0,
            within_limit=r["within"] or 0,
            minutes_total=_minutes(r["time"]),
        )
        work.weekday_day = work.signed - work.weekday_night - work.weekend
        per_radiologist.setdefault(r["radiologist_id"], {})[key] = work
    return _assembled(per_radiologist)


@dataclass
class LimitCell:
    """Consults of one priority and kind: how many, how many signed, signed within the
    limit, and not signed yet though past their limit (as of `now`)."""

    consults: int = 0
    signed: int = 0
    within_limit: int = 0
    open_overdue: int = 0

    @property
    def late(self) -> int:
        return self.signed - self.within_limit

    @property
    def within_percent(self) -> float | None:
        """Of the signed consults, as the turnaround page gives it."""
        return self.within_limit / self.signed * 100 if self.signed else None


@dataclass
class WithinLimit:
    priorities: list[str]  # Priority values, most urgent first
    kinds: list[str]
    cells: dict[tuple[str, str], LimitCell]  # (priority, kind)
    by_priority: dict[str, LimitCell]
    by_kind: dict[str, LimitCell]
    total: LimitCell


# The rollup's counts by priority (billing.rollup.PRIORITY_COLUMNS); routine's are the rest.
_RANKED = (Priority.EMERGENCY, Priority.URGENT)
_LIMIT_SUMS = ("exams", "signed", "within_limit", *(f"{p}_{c}" for p in _RANKED for c in ("exams", "signed", "within")))


def _add(cell: LimitCell, consults: int, signed: int, within: int) -> None:
    cell.consults += consults
    cell.signed += signed
    cell.within_limit += within


def within_limit_raw(filters: Filters, now: datetime | None = None) -> WithinLimit:
    """`within_limit` from the consults' raw rows: the oracle the tests hold it to."""
    moment = now or timezone.now()
    rows = (
        _counted(filters)
        .values("priority", "kind")
        .annotate(
            consults=Count("id"),
            signed=Count("signed_at"),
            within=_one(WITHIN),
            overdue=_one(Q(signed_at__isnull=True, due_at__lt=moment)),
        )
        .order_by()
    )
    cells: dict[tuple[str, str], LimitCell] = {}
    for r in rows:
        cells[(r["priority"], r["kind"])] = LimitCell(r["consults"], r["signed"], r["within"] or 0, r["overdue"] or 0)
    return _limit_table(cells)


def within_limit(filters: Filters, now: datetime | None = None) -> WithinLimit:
    """The share of consults signed within their time limit, by priority and exam kind:
    the consults, signed and within the limit from the rollup; the open consults already
    past their limit (as of `now`, so never rolled up) from the consults not signed."""
    moment = now or timezone.now()
    cells: dict[tuple[str, str], LimitCell] = {}

    def cell(priority: str, kind: str) -> LimitCell:
        return cells.setdefault((priority, kind), LimitCell())

    for rows, _date_field in rollup_parts(filters, by_radiologist=False):
        for r in rows.values("kind").annotate(*(Sum(name) for name in _LIMIT_SUMS)).order_by():
            total = [r[f"{name}__sum"] or 0 for name in _LIMIT_SUMS]
            routine = list(total[:3])
            for i, priority in enumerate(_RANKED):
                ranked = total[3 + 3 * i : 6 + 3 * i]
                routine = [a - b for a, b in zip(routine, ranked, strict=True)]
                if ranked[0]:
                    _add(cell(str(priority), r["kind"]), *ranked)
            if routine[0]:
                _add(cell(str(Priority.ROUTINE), r["kind"]), *routine)
    overdue = (
        _counted(filters)
        .filter(signed_at__isnull=True, due_at__lt=moment)
        .values("priority", "kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    for r in overdue:
        cell(r["priority"], r["kind"]).open_overdue += r["n"]
    return _limit_table(cells)


def _limit_table(cells: dict[tuple[str, str], LimitCell]) -> WithinLimit:
    priorities = [p for p in (Priority.EMERGENCY, Priority.URGENT, Priority.ROUTINE) if any(k[0] == p for k in cells)]
    kinds = [k for k in ExamKind.values if any(c[1] == k for c in cells)]

    def summed(keys: list[tuple[str, str]]) -> LimitCell:
        out = LimitCell()
        for key in keys:
            c = cells.get(key)
            if c:
                out.consults += c.consults
                out.signed += c.signed
                out.within_limit += c.within_limit
                out.open_overdue += c.open_overdue
        return out

    return WithinLimit(
        priorities=[str(p) for p in priorities],
        kinds=kinds,
        cells=cells,
        by_priority={str(p): summed([(p, k) for k in kinds]) for p in priorities},
        by_kind={k: summed([(p, k) for p in priorities]) for k in kinds},
        total=summed(list(cells)),
    )
