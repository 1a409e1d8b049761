"""The dashboards' queries: savings, turnaround and volume, as plain data.

Every function takes a `Filters` (already authorized and scoped by the view) and returns
dataclasses; aggregates run in SQL, money stays `Decimal`. Turnaround is the exception:
its medians and quartiles of five measures for five groupings were 25 percentile_cont sorts
in SQL (1.3 s at a county's 62 thousand exams), so a few numbers per signed consult are
fetched once and summarized with numpy, whose "linear" interpolation is percentile_cont's.
SQLite, which has no percentiles, takes the same path.

Which exams each page counts:
- volume: every consult that is not cancelled, by exam date;
- turnaround: consults with a signed report (arrival to signature, the paper's Figure 2);
- savings: ledger entries by exam date, reversals included (they are negative)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.db import connection
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth, TruncYear
from django.utils.translation import gettext_lazy as _

from billing import formatting, hanyin, histogram
from billing.models import (
    MEASURES,
    DailyRollup,
    LedgerEntry,
    MonthlyReaderTurnaround,
    MonthlyRollup,
    MonthlyTownshipTurnaround,
    PriceSchedule,
)
from consults.models import Consult, Priority
from facilities.models import ExamKind, Facility, Modality, User

ZERO = Decimal("0.00")
ONE_DAY = timedelta(days=1)
WAN = Decimal(10000)
CENT = Decimal("0.01")

# "Within the time limit" is the consult's own: signed by its stored due_at, which the
# reading workflow set from CONSULT_TIME_LIMITS when it arrived (consults.rules). A consult
# with no due_at, or not signed, is not within.
_WITHIN_SQL = "(c.signed_at IS NOT NULL AND c.due_at IS NOT NULL AND c.signed_at <= c.due_at)"

# The stages of a consult: (key, label, start column, end column).
STAGES: tuple[tuple[str, Any, str, str], ...] = (
    ("assign", _("到达→分配"), "arrived_at", "assigned_at"),
    ("open", _("分配→打开"), "assigned_at", "opened_at"),
    ("sign", _("打开→签发"), "opened_at", "signed_at"),
    ("deliver", _("签发→送达"), "signed_at", "delivered_at"),
)

PERIODS = ("year", "quarter", "month")

# The histogram of consult minutes: 10-minute bins, the last one open-ended.
HISTOGRAM_BIN_MINUTES = histogram.PLOT_BIN_MINUTES
HISTOGRAM_BINS = histogram.PLOT_BINS


@dataclass(frozen=True)
class Filters:
    """What every dashboard is restricted to. None means no restriction."""

    date_from: date | None = None
    date_to: date | None = None
    facility: Facility | None = None
    kind: str | None = None
    radiologist: User | None = None

    def consult_q(self, prefix: str = "") -> Q:
        q = Q()
        if self.date_from:
            q &= Q(**{f"{prefix}exam_date__gte": self.date_from})
        if self.date_to:
            q &= Q(**{f"{prefix}exam_date__lte": self.date_to})
        if self.facility:
            q &= Q(**{f"{prefix}facility": self.facility})
        if self.kind:
            q &= Q(**{f"{prefix}kind": self.kind})
        if self.radiologist:
            q &= Q(**{f"{prefix}radiologist": self.radiologist})
        return q

    def rollup_q(self) -> Q:
        """Township, kind and radiologist: the rollup's own dates are `rollup_parts`'."""
        q = Q()
        if self.facility:
            q &= Q(facility=self.facility)
        if self.kind:
            q &= Q(kind=self.kind)
        if self.radiologist:
            q &= Q(radiologist=self.radiologist)
        return q

    def ledger_q(self) -> Q:
        q = Q()
        if self.date_from:
            q &= Q(exam_date__gte=self.date_from)
        if self.date_to:
            q &= Q(exam_date__lte=self.date_to)
        if self.facility:
            q &= Q(facility=self.facility)
        if self.kind:
            q &= Q(exam_kind=self.kind)
        return q


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
        return first, _month_end(date(year, 3 * quarter, 1))
    if "-" in key:
        year, month = (int(x) for x in key.split("-"))
        return date(year, month, 1), _month_end(date(year, month, 1))
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


# ---------------------------------------------------------------------------- savings


@dataclass
class SavingRow:
    key: str
    label: str
    entries: int
    body_parts: int
    saving: Decimal
    drill: dict[str, str] = field(default_factory=dict)
    href: str = ""  # set by the view: the exams behind the row
    partial: tuple[date, date] | None = None  # set by the view: the days a partial period covers

    @property
    def saving_wan(self) -> Decimal:
        return wan(self.saving)


@dataclass
class TownshipSaving:
    facility: Facility
    by_kind: dict[str, Decimal]
    entries: int
    saving: Decimal

    @property
    def saving_wan(self) -> Decimal:
        return wan(self.saving)


@dataclass
class Savings:
    total: SavingRow
    by_township: list[TownshipSaving]
    by_kind: list[SavingRow]
    by_year: list[SavingRow]
    by_month: list[SavingRow]
    kinds: list[str]


@dataclass(frozen=True)
class RollupSplit:
    """Which rollup rows cover a date range: the monthly rows of the whole months inside it
    (bounds of `month`, None for open; no months at all if `months` is None) and the daily
    rows of the days left over at either end."""

    months: tuple[date | None, date | None] | None
    days: tuple[tuple[date, date], ...]


def _month_end(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1) - timedelta(days=1)


def rollup_split(date_from: date | None, date_to: date | None) -> RollupSplit:
    first_full = None if date_from is None else (date_from if date_from.day == 1 else _month_end(date_from) + ONE_DAY)
    last_full = None
    if date_to is not None:
        last_full = date_to.replace(day=1)
        if date_to != _month_end(date_to):
            last_full = (last_full - ONE_DAY).replace(day=1)
    if first_full is not None and last_full is not None and first_full > last_full:
        assert date_from is not None and date_to is not None
        return RollupSplit(None, ((date_from, date_to),))
    days = []
    if date_from is not None and first_full is not None and date_from < first_full:
        days.append((date_from, first_full - ONE_DAY))
    if date_to is not None and date_to != _month_end(date_to):
        days.append((date_to.replace(day=1), date_to))
    return RollupSplit((first_full, last_full), tuple(days))


def rollup_parts(filters: Filters) -> list[tuple[QuerySet[Any], str]]:
    """The rollup rows of the filters, as (queryset, name of its date field): monthly rows
    for whole months, daily rows for the rest."""
    split = rollup_split(filters.date_from, filters.date_to)
    parts: list[tuple[QuerySet[Any], str]] = []
    if split.months is not None:
        q = filters.rollup_q()
        first, last = split.months
        if first is not None:
            q &= Q(month__gte=first)
        if last is not None:
            q &= Q(month__lte=last)
        parts.append((MonthlyRollup.objects.filter(q), "month"))
    if split.days:
        days = Q()
        for first, last in split.days:
            days |= Q(day__gte=first, day__lte=last)
        parts.append((DailyRollup.objects.filter(filters.rollup_q() & days), "day"))
    return parts


def ledger_entries(filters: Filters) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(filters.ledger_q())


def _add(rows: dict[str, SavingRow], key: str, label: str, drill: dict[str, str], r: Mapping[str, Any]) -> None:
    row = rows.setdefault(key, SavingRow(key, label, 0, 0, ZERO, drill))
    row.entries += r["entries"]
    row.body_parts += r["parts"] or 0
    row.saving += money(r["saving"])


def savings(filters: Filters) -> Savings:
    """Every table of the savings page from the daily rollup's ledger totals, grouped by
    township, kind and month (a few hundred groups for a county), summed up in Decimal."""

    # Two groupings, not one by township x kind x month: a province's 1,100 townships
    # would make that fifty thousand groups to add up in Python.
    def grouped(*fields: str) -> list[dict[str, Any]]:
        return [
            r
            for rows, date_field in rollup_parts(filters)
            for r in rows.filter(ledger_entries__gt=0)
            .annotate(period=TruncMonth(date_field))
            .values(*fields)
            .annotate(entries=Sum("ledger_entries"), parts=Sum("ledger_parts"), saving=Sum("saving"))
            .order_by()
        ]

    by_township_and_kind = grouped("facility_id", "kind")
    facilities = {f.pk: f for f in Facility.objects.filter(pk__in={r["facility_id"] for r in by_township_and_kind})}
    total: dict[str, SavingRow] = {}
    by_kind: dict[str, SavingRow] = {}
    by_year: dict[str, SavingRow] = {}
    by_month: dict[str, SavingRow] = {}
    total_label = str(_("合计"))
    for r in grouped("kind", "period"):
        kind, year, month = r["kind"], f"{r['period']:%Y}", f"{r['period']:%Y-%m}"
        _add(total, "all", total_label, {}, r)
        _add(by_kind, kind, str(ExamKind(kind).label), {"modality": kind}, r)
        _add(by_year, year, year, {"year": year}, r)
        _add(by_month, month, month, {"month": month}, r)
    per_township: dict[int, TownshipSaving] = {}
    for r in by_township_and_kind:
        kind = r["kind"]
        row = per_township.setdefault(r["facility_id"], TownshipSaving(facilities[r["facility_id"]], {}, 0, ZERO))
        row.by_kind[kind] = row.by_kind.get(kind, ZERO) + money(r["saving"])
        row.entries += r["entries"]
        row.saving += money(r["saving"])
    return Savings(
        total=total.get("all") or SavingRow("all", str(_("合计")), 0, 0, ZERO),
        by_township=[per_township[f.pk] for f in township_order(facilities.values())],
        by_kind=[by_kind[k] for k in sorted(by_kind)],
        by_year=[by_year[k] for k in sorted(by_year)],
        by_month=[by_month[k] for k in sorted(by_month)],
        kinds=[k for k in ExamKind.values if k in by_kind],
    )


@dataclass
class EditionUse:
    """A price edition and the exams it priced in the selection: which edition priced
    which period, and how many of its entries are of exams before its notice's date."""

    schedule: PriceSchedule
    first: date
    last: date
    entries: int
    before_publication: int


def editions(filters: Filters) -> list[EditionUse]:
    """The editions that priced the ledger entries of the filters, oldest first. The ledger
    keeps each entry's edition, so this reads the entries (an index range on exam_date)."""
    rows = (
        LedgerEntry.objects.filter(filters.ledger_q())
        .values("schedule_id")
        .annotate(first=Min("exam_date"), last=Max("exam_date"), n=Count("id"))
        .order_by()
    )
    found = {r["schedule_id"]: r for r in rows}
    uses = []
    for schedule in PriceSchedule.objects.filter(pk__in=found).order_by("effective_from"):
        r = found[schedule.pk]
        early = 0
        if schedule.published_on is not None and r["first"] < schedule.published_on:
            early = (
                LedgerEntry.objects.filter(filters.ledger_q(), schedule=schedule, exam_date__lt=schedule.published_on)
                .order_by()
                .count()
            )
        uses.append(EditionUse(schedule, r["first"], r["last"], r["n"], early))
    return uses


def unconfirmed_parts(filters: Filters) -> int:
    """How many exams of the selection are billed for a count of body parts nobody named
    (no order or request gave them: counted as one part)."""
    return LedgerEntry.objects.filter(filters.ledger_q(), reverses__isnull=True, parts_confirmed=False).count()


# ---------------------------------------------------------------------------- volume


@dataclass
class VolumeRow:
    facility: Facility
    counts: list[int]  # one per year of the table

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass
class VolumeTable:
    kind: str
    years: list[int]
    rows: list[VolumeRow]

    @property
    def label(self) -> str:
        return str(ExamKind(self.kind).label)

    @property
    def year_totals(self) -> list[int]:
        return [sum(r.counts[i] for r in self.rows) for i in range(len(self.years))]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.rows)


def exam_count(filters: Filters, basis: str, *, year: int | None = None, quarter: int | None = None) -> int | None:
    """How many exams the exam list holds, from the rollup: the consults not cancelled
    ("all") or signed ("signed") in the filters and the cell's year or quarter. None for a
    count the rollup does not keep (exams in the ledger), which the list counts itself."""
    column = {"all": "exams", "signed": "signed"}.get(basis)
    if column is None:
        return None
    first, last = filters.date_from, filters.date_to
    if year is not None:
        start_month = 3 * (quarter - 1) + 1 if quarter else 1
        start = date(year, start_month, 1)
        end = _month_end(date(year, start_month + 2, 1)) if quarter else date(year, 12, 31)
        first, last = max(first or start, start), min(last or end, end)
        if first > last:
            return 0
    scoped = Filters(first, last, filters.facility, filters.kind, filters.radiologist)
    return sum(rows.aggregate(n=Sum(column))["n"] or 0 for rows, _field in rollup_parts(scoped))


def volume_consults(filters: Filters) -> QuerySet[Consult]:
    return Consult.objects.filter(filters.consult_q()).exclude(status=Consult.Status.CANCELLED)


def volume(filters: Filters) -> list[VolumeTable]:
    """Exams per township and year, one table per exam kind: the paper's Tables 1 (CT) and
    2 (DR). A township is a row when it has a machine of that kind or an exam of it."""
    cells: dict[tuple[str, int, int], int] = {}
    for rows, date_field in rollup_parts(filters):
        counts = (
            rows.filter(exams__gt=0)
            .annotate(year=TruncYear(date_field))
            .values("kind", "facility_id", "year")
            .annotate(n=Sum("exams"))
            .order_by()
        )
        for r in counts:
            key = (r["kind"], r["facility_id"], r["year"].year)
            cells[key] = cells.get(key, 0) + r["n"]
    years = sorted({y for _k, _f, y in cells})
    kinds = [filters.kind] if filters.kind else list(ExamKind.values)
    tables = []
    for kind in kinds:
        with_exams = {f for k, f, _y in cells if k == kind}
        machines = Modality.objects.filter(kind=kind, facility__kind=Facility.Kind.TOWNSHIP_CENTRE)
        if filters.facility:
            machines = machines.filter(facility=filters.facility)
        ids = with_exams | set(machines.values_list("facility_id", flat=True))
        facilities = township_order(Facility.objects.filter(pk__in=ids))
        table_rows = [VolumeRow(f, [cells.get((kind, f.pk, y), 0) for y in years]) for f in facilities]
        tables.append(VolumeTable(kind, years, table_rows))
    return tables


# ---------------------------------------------------------------------------- turnaround


@dataclass
class Summary:
    """Minutes of one measure over a group: n, mean ± SD, median (IQR)."""

    n: int = 0
    mean: float | None = None
    sd: float | None = None
    q1: float | None = None
    median: float | None = None
    q3: float | None = None


@dataclass
class TurnaroundRow:
    key: str
    label: str
    consult: Summary
    stages: dict[str, Summary]
    within_limit: int
    drill: dict[str, str] = field(default_factory=dict)
    href: str = ""  # set by the view: the exams behind the row
    text: dict[str, Any] = field(default_factory=dict)  # set by the view: cells()
    partial: tuple[date, date] | None = None  # set by the view: the days a partial period covers
    facility: Facility | None = None  # of a row by township

    @property
    def n(self) -> int:
        return self.consult.n

    def cells(self) -> dict[str, Any]:
        """The row's figures as the page prints them, formatted here rather than by a
        dozen template filters a row (a province's table has 1,100 rows)."""

        def mean_sd(s: Summary) -> str:
            return f"{fixed(s.mean)} ± {fixed(s.sd) or '–'}" if s.n else "–"

        def median_iqr(s: Summary) -> str:
            return f"{fixed(s.median)} ({fixed(s.q1)}–{fixed(s.q3)})" if s.n else "–"

        c = self.consult
        return {
            "n": formatting.number(self.n),
            "mean": fixed(c.mean),
            "sd": fixed(c.sd) or "–",
            "median": median_iqr(c) if c.n else " (–)",
            "share": f"{fixed(self.share_percent, 1)} %" if self.n else "",
            "stages": [(mean_sd(self.stages[key]), median_iqr(self.stages[key])) for key, *_rest in STAGES],
        }

    @property
    def share_within_limit(self) -> float | None:
        return self.within_limit / self.n if self.n else None

    @property
    def share_percent(self) -> float | None:
        share = self.share_within_limit
        return None if share is None else share * 100

    @property
    def stage_list(self) -> list[tuple[str, Summary]]:
        return [(str(label), self.stages[key]) for key, label, _a, _b in STAGES]


@dataclass
class Turnaround:
    total: TurnaroundRow
    by_township: list[TurnaroundRow]
    by_radiologist: list[TurnaroundRow]
    by_kind: list[TurnaroundRow]
    by_period: list[TurnaroundRow]
    period: str
    histogram: list[tuple[str, int]]

    @property
    def figure2(self) -> list[TurnaroundRow]:
        """Mean consult time by township, shortest first, as the paper draws Figure 2."""
        return sorted((r for r in self.by_township if r.n), key=lambda r: r.consult.mean or 0.0)

    @property
    def figure3(self) -> list[TurnaroundRow]:
        """Consults per radiologist, most first."""
        return sorted(self.by_radiologist, key=lambda r: -r.n)


def summarize(values: np.ndarray) -> Summary:
    """n, mean ± SD (sample) and quartiles of the values that are not NaN. numpy's default
    "linear" percentile is PostgreSQL's percentile_cont."""
    values = values[~np.isnan(values)]
    n = int(values.size)
    if not n:
        return Summary()
    q1, median, q3 = (float(q) for q in np.percentile(values, [25, 50, 75]))
    sd = float(values.std(ddof=1)) if n > 1 else None
    return Summary(n, float(values.mean()), sd, q1, median, q3)


def grouped_summaries(values: np.ndarray, order: np.ndarray, codes: np.ndarray, size: int) -> list[Summary]:
    """`summarize` for every group at once. `values` holds one measure for every row (NaN
    where missing), `order` is its ascending argsort (NaN last) and `codes` gives each row's
    group, 0 to size - 1. Quartiles interpolate linearly between the ranked values, as
    numpy's default percentile and PostgreSQL's percentile_cont do."""
    valid = order[: np.count_nonzero(~np.isnan(values))]  # NaN sorts last
    if not valid.size:
        return [Summary() for _i in range(size)]
    x, c = values[valid], codes[valid]  # ascending
    # Ranked within each group: a stable sort by group keeps the values' order inside it.
    ranked = x if size == 1 else x[np.argsort(c, kind="stable")]
    n = np.bincount(c, minlength=size)
    start = np.minimum(np.cumsum(n) - n, x.size - 1)  # a group with no values reads nothing
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(c, weights=x, minlength=size) / n
        deviation = x - mean[c]
        sd = np.sqrt(np.bincount(c, weights=deviation * deviation, minlength=size) / (n - 1))
    last = np.maximum(n - 1, 0)
    quartiles = []
    for p in (0.25, 0.5, 0.75):
        h = last * p
        lo = np.floor(h).astype(int)
        t = h - lo
        a = ranked[start + lo]
        b = ranked[start + np.minimum(lo + 1, last)]
        # numpy's lerp: from the nearer end, so that t = 1 gives b exactly.
        quartiles.append(np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t))
    q1, median, q3 = (q.tolist() for q in quartiles)
    means, sds, counts = mean.tolist(), sd.tolist(), n.tolist()
    return [
        Summary(counts[i], means[i], sds[i] if counts[i] > 1 else None, q1[i], median[i], q3[i])
        if counts[i]
        else Summary()
        for i in range(size)
    ]


def period_drill(key: str, period: str) -> dict[str, str]:
    if period == "month":
        return {"month": key}
    if period == "quarter":
        year, quarter = key.split("-Q")
        return {"year": year, "quarter": quarter}
    return {"year": key}


def _where(filters: Filters, *, signed_only: bool = True) -> tuple[str, list[Any]]:
    clauses = ["c.signed_at IS NOT NULL", "c.status <> %s"] if signed_only else ["c.status <> %s"]
    params: list[Any] = [Consult.Status.CANCELLED]
    if filters.date_from:
        clauses.append("c.exam_date >= %s")
        params.append(filters.date_from)
    if filters.date_to:
        clauses.append("c.exam_date <= %s")
        params.append(filters.date_to)
    if filters.facility:
        clauses.append("c.facility_id = %s")
        params.append(filters.facility.pk)
    if filters.kind:
        clauses.append("c.kind = %s")
        params.append(filters.kind)
    if filters.radiologist:
        clauses.append("c.radiologist_id = %s")
        params.append(filters.radiologist.pk)
    return " AND ".join(clauses), params


@dataclass
class _Group:
    consult: Summary
    stages: dict[str, Summary]
    within_limit: int


@dataclass
class _Signed:
    """The few numbers of each signed consult the turnaround page needs, as numpy columns."""

    facility: np.ndarray
    radiologist: np.ndarray  # 0 where none
    kind: np.ndarray  # index into ExamKind.values
    priority: np.ndarray  # index into Priority.values
    year: np.ndarray
    month: np.ndarray
    minutes: np.ndarray  # one row per measure: the consult, then each stage; NaN if not reached
    day: np.ndarray  # the exam date, in days since 1970-01-01
    parts: np.ndarray
    within: np.ndarray  # 1 where signed by its due_at, else 0


def _codes_sql(column: str, values: list[str]) -> str:
    branches = " ".join(f"WHEN '{value}' THEN {i}" for i, value in enumerate(values))
    return f"CASE c.{column} {branches} ELSE -1 END"


# The ends of each measure: the consult, then each stage.
_MEASURES = (("arrived_at", "signed_at"), *((a, b) for _k, _l, a, b in STAGES))
_TIMES = ("arrived_at", "assigned_at", "opened_at", "signed_at", "delivered_at")
_PG_EPOCH_DAYS = 10_957  # 1970-01-01 to 2000-01-01, PostgreSQL's epoch for dates and times
_NO_TIME = np.iinfo(np.int64).min  # -infinity, standing in for NULL


def _signed_postgresql(where: str, params: list[Any]) -> _Signed:
    """All the rows as one bytea of fixed-width binary records (each value's send function,
    as PostgreSQL's binary protocol has it), read in place by numpy. Turning 62 thousand rows
    into Python objects, or having PostgreSQL compute and print epochs, cost more than
    everything else together. No value is NULL, so every record has the same width."""
    columns: list[tuple[str, str, str]] = [
        ("facility", "int8send(c.facility_id)", ">i8"),
        ("radiologist", "int8send(COALESCE(c.radiologist_id, 0))", ">i8"),
        ("kind", f"int2send(({_codes_sql('kind', ExamKind.values)})::int2)", ">i2"),
        ("priority", f"int2send(({_codes_sql('priority', Priority.values)})::int2)", ">i2"),
        ("exam_date", "date_send(c.exam_date)", ">i4"),
        ("parts", "int2send(c.body_parts)", ">i2"),
        ("within", f"int2send(({_WITHIN_SQL})::int::int2)", ">i2"),
        *((name, f"timestamptz_send(COALESCE(c.{name}, '-infinity'))", ">i8") for name in _TIMES),
    ]
    record = np.dtype([(name, dtype) for name, _sql, dtype in columns])
    concatenated = " || ".join(sql for _n, sql, _d in columns)
    sql = f"SELECT string_agg({concatenated}, ''::bytea) FROM consults_consult c WHERE {where}"  # noqa: S608
    # Django's cursors bind parameters on the client, which rules out binary results: as
    # text the bytea would travel as hex, twice its size and 40 ms more to decode. A plain
    # psycopg cursor on the same connection (same transaction) asks for it in binary.
    import psycopg  # PostgreSQL's driver, present only where PostgreSQL is used

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        row = cursor.fetchone()
    rows = np.frombuffer(bytes(row[0] if row and row[0] is not None else b""), dtype=record)
    day = rows["exam_date"].astype(np.int64) + _PG_EPOCH_DAYS
    days = day.astype("datetime64[D]")
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    months = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    times = {name: rows[name].astype(np.int64) for name in _TIMES}
    minutes = np.empty((len(_MEASURES), rows.size))
    for i, (start, end) in enumerate(_MEASURES):
        a, b = times[start], times[end]
        # Microseconds to minutes, as date_part('epoch', end - start) / 60.
        minutes[i] = np.where((a == _NO_TIME) | (b == _NO_TIME), np.nan, (b - a) / 60_000_000)
    return _Signed(
        rows["facility"].astype(np.int64),
        rows["radiologist"].astype(np.int64),
        rows["kind"].astype(np.int64),
        rows["priority"].astype(np.int64),
        years,
        months,
        minutes,
        day,
        rows["parts"].astype(np.int64),
        rows["within"].astype(np.int64),
    )


def _signed_sqlite(where: str, params: list[Any]) -> _Signed:
    def minutes_sql(start: str, end: str) -> str:
        return f"(round((julianday(c.{end}) - julianday(c.{start})) * 86400000.0) / 60000.0)"

    sql = f"""
        SELECT c.facility_id, COALESCE(c.radiologist_id, 0), {_codes_sql("kind", ExamKind.values)},
               {_codes_sql("priority", Priority.values)},
               CAST(strftime('%%Y', c.exam_date) AS INTEGER), CAST(strftime('%%m', c.exam_date) AS INTEGER),
               CAST(julianday(c.exam_date) - 2440587.5 AS INTEGER), c.body_parts,
               CASE WHEN {_WITHIN_SQL} THEN 1 ELSE 0 END,
               {", ".join(minutes_sql(a, b) for a, b in _MEASURES)}
        FROM consults_consult c WHERE {where}
    """  # noqa: S608 -- only constants and placeholders are interpolated
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # NULL (a stage not reached) becomes NaN.
        table = np.array(cursor.fetchall(), dtype=float).reshape(-1, 9 + len(_MEASURES))
    facility, radiologist, kind, priority, year, month, day, parts, within = table[:, :9].astype(np.int64).T
    return _Signed(facility, radiologist, kind, priority, year, month, table[:, 9:].T.copy(), day, parts, within)


def read_consults(where: str, params: list[Any]) -> _Signed:
    """The consults matching a WHERE clause on `consults_consult c`, as numpy columns."""
    if connection.vendor == "postgresql":
        return _signed_postgresql(where, params)
    return _signed_sqlite(where, params)


def within_limit(signed: _Signed) -> np.ndarray:
    """Whether each consult was signed by its own due_at (False if not signed)."""
    return signed.within.astype(bool)


def _codes(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of an integer column, ascending, and each row's index into them,
    as small integers: numpy's stable sort of int16 is a radix sort."""
    low = int(column.min())
    if int(column.max()) - low < 1_000_000:
        # Ids and periods span a small range: count them instead of sorting 62 thousand rows.
        present = np.bincount(column - low) > 0
        values = np.flatnonzero(present) + low
        index = np.cumsum(present) - 1
        codes = index[column - low]
    else:
        values, codes = np.unique(column, return_inverse=True)
    return values, codes.astype(np.int16 if values.size <= np.iinfo(np.int16).max else np.int64)


def _groups(filters: Filters, period: str) -> tuple[dict[tuple[str, str], _Group], list[tuple[int, int]]]:
    """Every table of the page from one read of the signed consults (62 thousand rows for a
    county), grouped here. Each measure is sorted once; each grouping then orders those
    sorted rows by group with a stable radix sort, so quartiles come from positions."""
    signed = read_consults(*_where(filters))
    size = signed.facility.size
    if not size:
        return {}, []
    within = within_limit(signed).astype(float)
    year, month = signed.year, signed.month
    period_keys = {
        "year": (year, str),
        "quarter": (year * 10 + (month - 1) // 3 + 1, lambda k: f"{k // 10}-Q{k % 10}"),
        "month": (year * 100 + month, lambda k: f"{k // 100}-{k % 100:02d}"),
    }[period]
    kinds = ExamKind.values
    groupings: list[tuple[str, np.ndarray, Any]] = [
        ("all", np.zeros(size, dtype=np.int64), lambda _k: ""),
        ("facility", signed.facility, str),
        ("radiologist", signed.radiologist, lambda k: str(k) if k else "None"),
        ("kind", signed.kind, lambda k: kinds[k]),
        ("period", *period_keys),
    ]
    orders = [np.argsort(m) for m in signed.minutes]  # NaN last
    groups: dict[tuple[str, str], _Group] = {}
    for name, column, label in groupings:
        values, codes = _codes(column)
        summaries = [
            grouped_summaries(m, order, codes, len(values)) for m, order in zip(signed.minutes, orders, strict=True)
        ]
        counts_within = np.bincount(codes, weights=within, minlength=len(values))
        for i, value in enumerate(values.tolist()):
            groups[(name, label(value))] = _Group(
                summaries[0][i],
                {k: summaries[j + 1][i] for j, (k, _l, _a, _b) in enumerate(STAGES)},
                int(counts_within[i]),
            )
    consult = signed.minutes[0][~np.isnan(signed.minutes[0])]
    bins = np.minimum(np.floor(consult / HISTOGRAM_BIN_MINUTES), HISTOGRAM_BINS).astype(int)
    numbers, counts = np.unique(bins, return_counts=True)
    return groups, [(int(b), int(n)) for b, n in zip(numbers, counts, strict=True)]


# ---------------------------------------------------------------------------- turnaround from the rollup


@dataclass
class _Rolled:
    """The rollup rows of the selection as numpy columns, and their histogram records."""

    facility: np.ndarray
    radiologist: np.ndarray
    kind: np.ndarray
    day: np.ndarray  # days since 1970-01-01
    within: np.ndarray
    n: np.ndarray  # one row per measure (MEASURES)
    sums: np.ndarray
    sumsqs: np.ndarray
    keys: np.ndarray  # of the histogram records (billing.histogram)
    counts: np.ndarray
    record_row: np.ndarray  # the rollup row of each record


def _rollup_wheres(filters: Filters) -> list[_Part]:
    """Each part of the rollup to read (`_Part`)."""
    common: list[str] = ["r.signed > 0"]
    params: list[Any] = []
    for sql, value in (
        ("r.facility_id = %s", filters.facility.pk if filters.facility else None),
        ("r.kind = %s", filters.kind),
        ("r.radiologist_id = %s", filters.radiologist.pk if filters.radiologist else None),
    ):
        if value is not None and value != "":
            common.append(sql)
            params.append(value)
    split = rollup_split(filters.date_from, filters.date_to)
    parts = []
    if split.months is not None:
        clauses, values = list(common), list(params)
        for sql, bound in (("r.month >= %s", split.months[0]), ("r.month <= %s", split.months[1])):
            if bound is not None:
                clauses.append(sql)
                values.append(bound)
        parts.append((MonthlyRollup._meta.db_table, "month", " AND ".join(clauses), values, *_ROW_KEYS))
    if split.days:
        ranges = " OR ".join("r.day BETWEEN %s AND %s" for _range in split.days)
        values = [*params, *(d for days in split.days for d in days)]
        parts.append((DailyRollup._meta.db_table, "day", " AND ".join([*common, f"({ranges})"]), values, *_ROW_KEYS))
    return parts


def _grain_parts(filters: Filters) -> tuple[_Part, _Part] | None:
    """The whole months of the filters from the per-township and the per-radiologist
    monthly rows, when they can serve: the filters name no township and no radiologist
    (those rows add them up) and cover a whole month. None otherwise."""
    split = rollup_split(filters.date_from, filters.date_to)
    if filters.facility is not None or filters.radiologist is not None or split.months is None:
        return None
    clauses: list[str] = ["r.signed > 0"]
    values: list[Any] = []
    if filters.kind:
        clauses.append("r.kind = %s")
        values.append(filters.kind)
    for sql, bound in (("r.month >= %s", split.months[0]), ("r.month <= %s", split.months[1])):
        if bound is not None:
            clauses.append(sql)
            values.append(bound)
    where = " AND ".join(clauses)
    return (
        (MonthlyTownshipTurnaround._meta.db_table, "month", where, list(values), "r.facility_id", "0"),
        (MonthlyReaderTurnaround._meta.db_table, "month", where, list(values), "0", "COALESCE(r.radiologist_id, 0)"),
    )


def _kind_code_sql() -> str:
    branches = " ".join(f"WHEN '{value}' THEN {i}" for i, value in enumerate(ExamKind.values))
    return f"CASE r.kind {branches} ELSE -1 END"


# A part of the rollup to read: table, date column, WHERE, parameters, and the SQL of its
# facility and radiologist (0 in a table that adds them up).
_Part = tuple[str, str, str, list[Any], str, str]
_ROW_KEYS = ("r.facility_id", "COALESCE(r.radiologist_id, 0)")


def _rolled_postgresql(
    table: str, date_column: str, where: str, params: list[Any], facility: str, radiologist: str
) -> _Rolled:
    """As `_signed_postgresql`: fixed-width binary records, plus the rows' histograms
    concatenated in the same order, both read in place by numpy."""
    columns: list[tuple[str, str, str]] = [
        ("facility", f"int8send(({facility})::int8)", ">i8"),
        ("radiologist", f"int8send(({radiologist})::int8)", ">i8"),
        ("kind", f"int2send(({_kind_code_sql()})::int2)", ">i2"),
        ("day", f"date_send(r.{date_column})", ">i4"),
        ("within", "int4send(r.within_limit)", ">i4"),
        *(
            column
            for m in MEASURES
            for column in (
                (f"{m}_n", f"int4send(r.{m}_n)", ">i4"),
                (f"{m}_sum", f"float8send(r.{m}_sum)", ">f8"),
                (f"{m}_sumsq", f"float8send(r.{m}_sumsq)", ">f8"),
            )
        ),
        ("length", "int4send(length(r.histograms))", ">i4"),
    ]
    record = np.dtype([(name, dtype) for name, _sql, dtype in columns])
    concatenated = " || ".join(sql for _n, sql, _d in columns)
    sql = (
        f"SELECT string_agg({concatenated}, ''::bytea ORDER BY r.id), "  # noqa: S608
        f"string_agg(r.histograms, ''::bytea ORDER BY r.id) FROM {table} r WHERE {where}"
    )
    import psycopg  # PostgreSQL's driver, present only where PostgreSQL is used

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        found = cursor.fetchone()
    rows = np.frombuffer(bytes(found[0]) if found and found[0] is not None else b"", dtype=record)
    blob = bytes(found[1]) if found and found[1] is not None else b""
    lengths = rows["length"].astype(np.int64)
    return _rolled({name: rows[name] for name, _sql, _d in columns}, blob, lengths, _PG_EPOCH_DAYS)


def _rolled_sqlite(
    table: str, date_column: str, where: str, params: list[Any], facility: str, radiologist: str
) -> _Rolled:
    names = ["facility", "radiologist", "kind", "day", "within"]
    names += [f"{m}_{part}" for m in MEASURES for part in ("n", "sum", "sumsq")]
    sql = f"""
        SELECT {facility}, {radiologist}, {_kind_code_sql()},
               CAST(julianday(r.{date_column}) - 2440587.5 AS INTEGER), r.within_limit,
               {", ".join(f"r.{m}_n, r.{m}_sum, r.{m}_sumsq" for m in MEASURES)}, r.histograms
        FROM {table} r WHERE {where} ORDER BY r.id
    """  # noqa: S608 -- only constants and placeholders are interpolated
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    figures = np.array([r[:-1] for r in fetched], dtype=float).reshape(-1, len(names))
    blobs = [bytes(r[-1] or b"") for r in fetched]
    return _rolled(
        {name: figures[:, i] for i, name in enumerate(names)},
        b"".join(blobs),
        np.array([len(b) for b in blobs], dtype=np.int64),
        0,
    )


def _rolled(columns: dict[str, np.ndarray], blob: bytes, lengths: np.ndarray, day_offset: int) -> _Rolled:
    keys, counts = histogram.keys_and_counts(blob)
    size = columns["facility"].size
    per_row = lengths // histogram.RECORD.itemsize
    return _Rolled(
        facility=columns["facility"].astype(np.int64),
        radiologist=columns["radiologist"].astype(np.int64),
        kind=columns["kind"].astype(np.int64),
        day=columns["day"].astype(np.int64) + day_offset,
        within=columns["within"].astype(float),
        n=np.array([columns[f"{m}_n"] for m in MEASURES], dtype=float).reshape(len(MEASURES), size),
        sums=np.array([columns[f"{m}_sum"] for m in MEASURES], dtype=float).reshape(len(MEASURES), size),
        sumsqs=np.array([columns[f"{m}_sumsq"] for m in MEASURES], dtype=float).reshape(len(MEASURES), size),
        keys=keys,
        counts=counts,
        record_row=np.repeat(np.arange(size, dtype=np.int32), per_row),
    )


def _concatenated(parts: list[_Rolled]) -> _Rolled:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0, *(p.facility.size for p in parts)])[:-1]
    return _Rolled(
        facility=np.concatenate([p.facility for p in parts]),
        radiologist=np.concatenate([p.radiologist for p in parts]),
        kind=np.concatenate([p.kind for p in parts]),
        day=np.concatenate([p.day for p in parts]),
        within=np.concatenate([p.within for p in parts]),
        n=np.concatenate([p.n for p in parts], axis=1),
        sums=np.concatenate([p.sums for p in parts], axis=1),
        sumsqs=np.concatenate([p.sumsqs for p in parts], axis=1),
        keys=np.concatenate([p.keys for p in parts]),
        counts=np.concatenate([p.counts for p in parts]),
        record_row=np.concatenate([p.record_row + o for p, o in zip(parts, offsets, strict=True)]),
    )


@dataclass
class _Durations:
    """The histogram records of the durations (not the plot's), ready to be binned by group:
    each record's rollup row, its cell (measure * SIZE + bin) and its count."""

    row: np.ndarray
    cell: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, rolled: _Rolled) -> _Durations:
        measure = rolled.keys // histogram.KEY_STRIDE
        keep = measure < len(MEASURES)
        kept = rolled.keys[keep].astype(np.int32)
        cell = (kept // histogram.KEY_STRIDE) * histogram.SIZE + kept % histogram.KEY_STRIDE
        return cls(rolled.record_row[keep], cell, rolled.counts[keep])


def _rollup_summaries(rolled: _Rolled, durations: _Durations, codes: np.ndarray, size: int) -> list[list[Summary]]:
    """For each measure, the Summary of each group: n, mean and SD from the summed counts,
    sums and squares; quartiles from the summed histograms."""
    measures = len(MEASURES)
    cells = codes[durations.row] * (measures * histogram.SIZE) + durations.cell
    dense = np.bincount(cells, weights=durations.count, minlength=size * measures * histogram.SIZE).reshape(
        size * measures, histogram.SIZE
    )
    quartiles = histogram.quartiles_minutes(dense).reshape(size, measures, 3)
    result = []
    for m in range(measures):
        n = np.bincount(codes, weights=rolled.n[m], minlength=size)
        total = np.bincount(codes, weights=rolled.sums[m], minlength=size)
        squares = np.bincount(codes, weights=rolled.sumsqs[m], minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / n
            sd = np.sqrt(np.maximum(squares - total * mean, 0.0) / (n - 1))
        summaries = []
        for g in range(size):
            count = round(float(n[g]))
            if not count:
                summaries.append(Summary())
                continue
            q1, median, q3 = (float(q) for q in quartiles[g, m])
            if count == 1:  # one consult: its quartiles are its value, which the sum holds exactly
                q1 = median = q3 = float(mean[g])
            summaries.append(Summary(count, float(mean[g]), float(sd[g]) if count > 1 else None, q1, median, q3))
        result.append(summaries)
    return result


def _period_keys(day: np.ndarray, period: str) -> tuple[np.ndarray, Any]:
    days = day.astype("datetime64[D]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return {
        "year": (year, str),
        "quarter": (year * 10 + (month - 1) // 3 + 1, lambda k: f"{k // 10}-Q{k % 10}"),
        "month": (year * 100 + month, lambda k: f"{k // 100}-{k % 100:02d}"),
    }[period]


def _grouped(rolled: _Rolled, period: str, names: tuple[str, ...], groups: dict[tuple[str, str], _Group]) -> None:
    """Add to `groups` the groups of each grouping in `names` over the rows of `rolled`."""
    if not rolled.facility.size:
        return
    kinds = ExamKind.values
    groupings: dict[str, tuple[Any, Any]] = {
        "all": (lambda: np.zeros(rolled.facility.size, dtype=np.int64), lambda _k: ""),
        "facility": (lambda: rolled.facility, str),
        "radiologist": (lambda: rolled.radiologist, lambda k: str(k) if k else "None"),
        "kind": (lambda: rolled.kind, lambda k: kinds[k]),
    }
    durations = _Durations.of(rolled)
    for name in names:
        if name == "period":
            column, label = _period_keys(rolled.day, period)
        else:
            make, label = groupings[name]
            column = make()
        values, codes = _codes(column)
        codes = codes.astype(np.int64)
        summaries = _rollup_summaries(rolled, durations, codes, len(values))
        counts_within = np.bincount(codes, weights=rolled.within, minlength=len(values))
        for i, value in enumerate(values.tolist()):
            groups[(name, label(value))] = _Group(
                summaries[0][i],
                {k: summaries[j + 1][i] for j, (k, _l, _a, _b) in enumerate(STAGES)},
                round(float(counts_within[i])),
            )


def _plot_bins(rolled: _Rolled) -> list[tuple[int, int]]:
    key = rolled.keys.astype(np.int64)
    plot = key // histogram.KEY_STRIDE == histogram.PLOT_MEASURE
    counts = np.bincount(
        key[plot] % histogram.KEY_STRIDE,
        weights=rolled.counts[plot],
        minlength=histogram.PLOT_BINS + 1,
    )
    return [(b, int(n)) for b, n in enumerate(counts.tolist()) if n]


def _rollup_groups(
    filters: Filters, period: str, *, grains: bool = True
) -> tuple[dict[tuple[str, str], _Group], list[tuple[int, int]]]:
    """`_groups` from the rollup. Over whole months without a township or radiologist
    filter, the table by township reads the per-township monthly rows and every other
    table the per-radiologist ones (a province's monthly rows carry each radiologist's
    histograms for each township: tens of millions of records); the days at either end of
    a range, and every other selection, read the daily and monthly rows themselves."""
    read = _rolled_postgresql if connection.vendor == "postgresql" else _rolled_sqlite
    groups: dict[tuple[str, str], _Group] = {}
    grain_parts = _grain_parts(filters) if grains else None
    everything = ("all", "facility", "radiologist", "kind", "period")
    if grain_parts is None:
        rolled = _concatenated([read(*part) for part in _rollup_wheres(filters)])
        _grouped(rolled, period, everything, groups)
        return groups, _plot_bins(rolled) if rolled.facility.size else []
    days = [read(*part) for part in _rollup_wheres(filters) if part[1] == "day"]
    townships, readers = (_concatenated([read(*part), *days]) for part in grain_parts)
    _grouped(townships, period, ("facility",), groups)
    _grouped(readers, period, ("all", "radiologist", "kind", "period"), groups)
    return groups, _plot_bins(readers) if readers.facility.size else []


def turnaround(filters: Filters, period: str = "year", *, source: str = "rollup") -> Turnaround:
    """The turnaround page's figures, from the daily rollup (quartiles from merged
    histograms, within billing.histogram.RELATIVE_ERROR) or, with source="raw", from every
    signed consult (exact quartiles; the reference the tests hold the rollup to)."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    groups, bins = (_rollup_groups if source == "rollup" else _groups)(filters, period)
    empty = _Group(Summary(), {k: Summary() for k, *_rest in STAGES}, 0)

    def row(kind: str, key: str, label: str, drill: dict[str, str]) -> TurnaroundRow:
        g = groups.get((kind, key), empty)
        return TurnaroundRow(key, label, g.consult, g.stages, g.within_limit, drill)

    def by_township(f: Facility) -> TurnaroundRow:
        township = row("facility", str(f.pk), f.short_name, {"township": str(f.uuid)})
        township.facility = f
        return township

    facility_ids = [int(k) for (kind, k) in groups if kind == "facility"]
    facilities = township_order(Facility.objects.filter(pk__in=facility_ids))
    radiologist_ids = [int(k) for (kind, k) in groups if kind == "radiologist" and k != "None"]
    radiologists = sorted(User.objects.filter(pk__in=radiologist_ids), key=lambda u: (str(u), u.pk))
    kinds = sorted(k for (kind, k) in groups if kind == "kind")
    periods = sorted(k for (kind, k) in groups if kind == "period")
    histogram = [
        (
            f"≥{b * HISTOGRAM_BIN_MINUTES}"
            if b == HISTOGRAM_BINS
            else f"{b * HISTOGRAM_BIN_MINUTES}–{(b + 1) * HISTOGRAM_BIN_MINUTES}",
            n,
        )
        for b, n in bins
    ]
    return Turnaround(
        total=row("all", "", str(_("合计")), {}),
        by_township=[by_township(f) for f in facilities],
        by_radiologist=[row("radiologist", str(u.pk), str(u), {"radiologist": str(u.uuid)}) for u in radiologists],
        by_kind=[row("kind", k, str(ExamKind(k).label), {"modality": k}) for k in kinds],
        by_period=[row("period", p, p, period_drill(p, period)) for p in periods],
        period=period,
        histogram=histogram,
    )
