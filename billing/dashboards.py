"""The dashboards' queries: savings, turnaround and volume, as plain data.

Every function takes a `Filters` (already authorized and scoped by the view) and returns
dataclasses; aggregates run in SQL, money stays `Decimal`. Medians and quartiles use
percentile_cont in SQL on PostgreSQL; SQLite has none, so there the minutes are fetched and
the same interpolation (numpy's "linear", percentile_cont's) is done in Python: a county's
exams fit in memory easily.

Which exams each page counts:
- volume: every consult that is not cancelled, by exam date;
- turnaround: consults with a signed report (arrival to signature, the paper's Figure 2);
- savings: ledger entries by exam date, reversals included (they are negative)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth, TruncYear
from django.utils.translation import gettext_lazy as _

from billing import hanyin
from billing.models import LedgerEntry
from consults.models import Consult, Priority
from facilities.models import ExamKind, Facility, Modality, User

ZERO = Decimal("0.00")
WAN = Decimal(10000)
CENT = Decimal("0.01")

# Time limits for a consult, arrival to signed report, in minutes, by priority and kind.
# Emergency and routine follow the service agreement's defaults; urgent (加急) has none
# written down, so the platform takes twice the emergency limit.
TIME_LIMITS_MINUTES: dict[tuple[str, str], int] = {
    (Priority.EMERGENCY, ExamKind.DR): 30,
    (Priority.EMERGENCY, ExamKind.CT): 60,
    (Priority.URGENT, ExamKind.DR): 60,
    (Priority.URGENT, ExamKind.CT): 120,
    (Priority.ROUTINE, ExamKind.DR): 120,
    (Priority.ROUTINE, ExamKind.CT): 240,
}

# The stages of a consult: (key, label, start column, end column).
STAGES: tuple[tuple[str, Any, str, str], ...] = (
    ("assign", _("到达→分配"), "arrived_at", "assigned_at"),
    ("open", _("分配→打开"), "assigned_at", "opened_at"),
    ("sign", _("打开→签发"), "opened_at", "signed_at"),
    ("deliver", _("签发→送达"), "signed_at", "delivered_at"),
)

PERIODS = ("year", "quarter", "month")

# PostgreSQL's work_mem for the turnaround query, which sorts every measure of every group.
SORT_MEMORY = "64MB"

# The histogram of consult minutes: 10-minute bins, the last one open-ended.
HISTOGRAM_BIN_MINUTES = 10
HISTOGRAM_BINS = 18


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


def wan(yuan: Decimal) -> Decimal:
    """Yuan in 万元 (ten thousand yuan), to the cent of a 万元 as the pages show it."""
    return (yuan / WAN).quantize(CENT, rounding=ROUND_HALF_UP)


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


def ledger_entries(filters: Filters) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(filters.ledger_q())


def _add(rows: dict[str, SavingRow], key: str, label: str, drill: dict[str, str], r: Mapping[str, Any]) -> None:
    row = rows.setdefault(key, SavingRow(key, label, 0, 0, ZERO, drill))
    row.entries += r["entries"]
    row.body_parts += r["parts"] or 0
    row.saving += money(r["saving"])


def savings(filters: Filters) -> Savings:
    """Every table of the savings page from one scan of the ledger, grouped by township,
    kind and month (a few hundred groups for a county), summed up in Decimal here."""
    # date_trunc, not EXTRACT: PostgreSQL's EXTRACT gives numerics it will not hash, and
    # sorting a province's ledger by them spills to disk; by the bare date there are
    # twenty times more groups to hash.
    groups = list(
        ledger_entries(filters)
        .annotate(month=TruncMonth("exam_date"))
        .values("facility_id", "exam_kind", "month")
        .annotate(entries=Count("id"), parts=Sum("body_parts"), saving=Sum("saving"))
        .order_by()
    )
    facilities = {f.pk: f for f in Facility.objects.filter(pk__in={r["facility_id"] for r in groups})}
    total: dict[str, SavingRow] = {}
    by_kind: dict[str, SavingRow] = {}
    by_year: dict[str, SavingRow] = {}
    by_month: dict[str, SavingRow] = {}
    per_township: dict[int, TownshipSaving] = {}
    for r in groups:
        kind, year, month = r["exam_kind"], f"{r['month']:%Y}", f"{r['month']:%Y-%m}"
        _add(total, "all", str(_("合计")), {}, r)
        _add(by_kind, kind, str(ExamKind(kind).label), {"modality": kind}, r)
        _add(by_year, year, year, {"year": year}, r)
        _add(by_month, month, month, {"month": month}, r)
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


def volume_consults(filters: Filters) -> QuerySet[Consult]:
    return Consult.objects.filter(filters.consult_q()).exclude(status=Consult.Status.CANCELLED)


def volume(filters: Filters) -> list[VolumeTable]:
    """Exams per township and year, one table per exam kind: the paper's Tables 1 (CT) and
    2 (DR). A township is a row when it has a machine of that kind or an exam of it."""
    counts = (
        volume_consults(filters)
        .annotate(year=TruncYear("exam_date"))
        .values("kind", "facility_id", "year")
        .annotate(n=Count("id"))
        .order_by()
    )
    cells = {(r["kind"], r["facility_id"], r["year"].year): r["n"] for r in counts}
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
        rows = [VolumeRow(f, [cells.get((kind, f.pk, y), 0) for y in years]) for f in facilities]
        tables.append(VolumeTable(kind, years, rows))
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

    @property
    def n(self) -> int:
        return self.consult.n

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


def period_of(day: date, period: str) -> str:
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def period_drill(key: str, period: str) -> dict[str, str]:
    if period == "month":
        return {"month": key}
    if period == "quarter":
        year, quarter = key.split("-Q")
        return {"year": year, "quarter": quarter}
    return {"year": key}


def _limit_case(minutes_sql: str) -> str:
    branches = " ".join(
        f"WHEN c.priority = '{priority}' AND c.kind = '{kind}' THEN {limit}"
        for (priority, kind), limit in TIME_LIMITS_MINUTES.items()
    )
    return f"CASE WHEN {minutes_sql} <= (CASE {branches} END) THEN 1 ELSE 0 END"


def _where(filters: Filters) -> tuple[str, list[Any]]:
    clauses = ["c.signed_at IS NOT NULL", "c.status <> %s"]
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


def _minutes_sql(start: str, end: str) -> str:
    if connection.vendor == "postgresql":
        return f"(date_part('epoch', c.{end} - c.{start}) / 60.0)"
    return f"(round((julianday(c.{end}) - julianday(c.{start})) * 86400000.0) / 60000.0)"


@dataclass
class _Group:
    consult: Summary
    stages: dict[str, Summary]
    within_limit: int


def _groups_postgresql(filters: Filters, period: str) -> tuple[dict[tuple[str, str], _Group], list[tuple[int, int]]]:
    """One pass over the signed consults with GROUPING SETS: every table of the page."""
    where, params = _where(filters)
    total = _minutes_sql("arrived_at", "signed_at")
    measures = [("t", total)] + [(key, _minutes_sql(a, b)) for key, _l, a, b in STAGES]
    period_sql = {
        "year": "to_char(c.exam_date, 'YYYY')",
        "quarter": "to_char(c.exam_date, 'YYYY-\"Q\"Q')",
        "month": "to_char(c.exam_date, 'YYYY-MM')",
    }[period]
    inner_cols = ", ".join(f"{sql} AS {key}" for key, sql in measures)
    aggregates = ", ".join(
        f"count({key}), avg({key}), stddev_samp({key}), "
        f"percentile_cont(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY {key})"
        for key, _sql in measures
    )
    sql = f"""
        SELECT GROUPING(facility_id, radiologist_id, kind, period) AS g,
               facility_id, radiologist_id, kind, period, {aggregates}, sum(within) AS within
        FROM (
            SELECT c.facility_id, c.radiologist_id, c.kind, {period_sql} AS period,
                   {inner_cols}, {_limit_case(total)} AS within
            FROM consults_consult c WHERE {where}
        ) s
        GROUP BY GROUPING SETS ((facility_id), (radiologist_id), (kind), (period), ())
    """  # noqa: S608 -- only constants and placeholders are interpolated
    groups: dict[tuple[str, str], _Group] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        # Each quartile is a sort; with the default 4 MB they spill to disk. JIT compiling
        # this many aggregates costs seconds and saves nothing; and the planner likes to read
        # the whole table through the facility index to save one sort, which is slower.
        cursor.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
        cursor.execute("SET LOCAL jit = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            grouping, facility_id, radiologist_id, kind, period_key = row[:5]
            summaries = []
            for i in range(len(measures)):
                n, mean, sd, quartiles = row[5 + 4 * i : 9 + 4 * i]
                q1, median, q3 = quartiles if quartiles else (None, None, None)
                summaries.append(Summary(n, _f(mean), _f(sd), _f(q1), _f(median), _f(q3)) if n else Summary())
            key = _grouping_key(grouping, facility_id, radiologist_id, kind, period_key)
            groups[key] = _Group(
                summaries[0], {k: s for (k, _x), s in zip(measures[1:], summaries[1:], strict=True)}, int(row[-1])
            )
        bins = _histogram_sql(where, total)
        cursor.execute(bins, params)
        histogram = [(int(b), int(n)) for b, n in cursor.fetchall()]
    return groups, histogram


def _histogram_sql(where: str, total: str) -> str:
    return f"""
        SELECT LEAST(FLOOR({total} / {HISTOGRAM_BIN_MINUTES}), {HISTOGRAM_BINS})::int AS b, count(*)
        FROM consults_consult c WHERE {where} GROUP BY b ORDER BY b
    """  # noqa: S608 -- constants only


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _grouping_key(grouping: int, facility_id: Any, radiologist_id: Any, kind: Any, period: Any) -> tuple[str, str]:
    # GROUPING() sets a bit for each column left out, the first column the highest bit.
    if grouping == 0b0111:
        return ("facility", str(facility_id))
    if grouping == 0b1011:
        return ("radiologist", str(radiologist_id))
    if grouping == 0b1101:
        return ("kind", str(kind))
    if grouping == 0b1110:
        return ("period", str(period))
    return ("all", "")


def _groups_python(filters: Filters, period: str) -> tuple[dict[tuple[str, str], _Group], list[tuple[int, int]]]:
    """The same figures as `_groups_postgresql`, from the minutes fetched once."""
    where, params = _where(filters)
    total = _minutes_sql("arrived_at", "signed_at")
    stage_cols = ", ".join(_minutes_sql(a, b) for _k, _l, a, b in STAGES)
    sql = f"""
        SELECT c.facility_id, c.radiologist_id, c.kind, c.exam_date, {total}, {stage_cols}, {_limit_case(total)}
        FROM consults_consult c WHERE {where}
    """  # noqa: S608 -- only constants and placeholders are interpolated
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return {}, []
    facility_ids, radiologist_ids, kinds, exam_dates, *columns = zip(*rows, strict=True)
    # Minutes of the consult and of each stage, one row per measure; NaN where not reached.
    minutes = np.array(columns[: len(STAGES) + 1], dtype=float)
    within = np.array(columns[-1], dtype=int)
    days = [d if isinstance(d, date) else date.fromisoformat(d) for d in exam_dates]
    keys: dict[str, np.ndarray] = {
        "facility": np.array([str(f) for f in facility_ids]),
        "radiologist": np.array([str(r) for r in radiologist_ids]),
        "kind": np.array([str(k) for k in kinds]),
        "period": np.array([period_of(d, period) for d in days]),
    }
    groups: dict[tuple[str, str], _Group] = {}

    def group(selected: np.ndarray | slice) -> _Group:
        part = minutes[:, selected]
        return _Group(
            summarize(part[0]),
            {k: summarize(part[i + 1]) for i, (k, _l, _a, _b) in enumerate(STAGES)},
            int(within[selected].sum()),
        )

    groups[("all", "")] = group(slice(None))
    for name, column in keys.items():
        for value in np.unique(column):
            groups[(name, str(value))] = group(column == value)
    bins = np.minimum(np.floor(minutes[0] / HISTOGRAM_BIN_MINUTES), HISTOGRAM_BINS).astype(int)
    numbers, counts = np.unique(bins, return_counts=True)
    return groups, [(int(b), int(n)) for b, n in zip(numbers, counts, strict=True)]


def turnaround(filters: Filters, period: str = "year") -> Turnaround:
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    if connection.vendor == "postgresql":
        groups, bins = _groups_postgresql(filters, period)
    else:
        groups, bins = _groups_python(filters, period)
    empty = _Group(Summary(), {k: Summary() for k, *_rest in STAGES}, 0)

    def row(kind: str, key: str, label: str, drill: dict[str, str]) -> TurnaroundRow:
        g = groups.get((kind, key), empty)
        return TurnaroundRow(key, label, g.consult, g.stages, g.within_limit, drill)

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
        by_township=[row("facility", str(f.pk), f.short_name, {"township": str(f.uuid)}) for f in facilities],
        by_radiologist=[row("radiologist", str(u.pk), str(u), {"radiologist": str(u.uuid)}) for u in radiologists],
        by_kind=[row("kind", k, str(ExamKind(k).label), {"modality": k}) for k in kinds],
        by_period=[row("period", p, p, period_drill(p, period)) for p in periods],
        period=period,
        histogram=histogram,
    )
