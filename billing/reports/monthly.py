"""The monthly report's figures (月报, billing.monthly prints and stores it): the month's
volumes, savings, turnaround and share within the time limit, by township, beside the
month before and the same month a year earlier, and the last twelve months' exams.

Every figure comes from the dashboards' reports (`volume`, `savings`, `turnaround`), under
the same rules as the pages: volume counts the consults not cancelled, savings the ledger,
turnaround the signed consults (arrival to signature), and within the limit is signed by
the consult's stored due_at; all by exam date."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.db.models.functions import TruncMonth

from billing.reports.common import ZERO, money, township_order
from billing.reports.filters import Filters, month_end, rollup_parts
from billing.reports.growth import growth_percent
from billing.reports.measures import Summary
from billing.reports.savings import savings
from billing.reports.travel import Travel, travel
from billing.reports.turnaround import turnaround
from billing.reports.volume import volume
from billing.reports.workload import WithinLimit, within_limit
from facilities.models import ExamKind, Facility
from facilities.services import county_hospital

# A province has a thousand townships; one page shows this many, the most exams first,
# and the rest added up in one row.
TOWNSHIP_ROWS = 14
TREND_MONTHS = 12


def first_of_month(day: date) -> date:
    return day.replace(day=1)


def previous_month(month: date) -> date:
    return (month.replace(day=1) - timedelta(days=1)).replace(day=1)


def month_range(month: date) -> tuple[date, date]:
    return month.replace(day=1), month_end(month)


def growth(current: Decimal | int, before: Decimal | int) -> float | None:
    """The change from `before` to `current` as a share of `before` (what the PDF prints
    as a percentage), by the growth pages' one rule (`growth_percent`: to 0.1 %, None
    when there was nothing before to grow from)."""
    percent = growth_percent(current, before)
    return None if percent is None else float(percent) / 100


@dataclass
class Comparison:
    """A figure of the month beside the same figure of another month."""

    month: date
    exams: int
    saving: Decimal
    exams_growth: float | None
    saving_growth: float | None


@dataclass
class TownshipMonth:
    """One township's month; `facility` None for the row of the townships not shown."""

    facility: Facility | None
    label: str
    exams: dict[str, int]
    saving: Decimal
    signed: int
    minutes_total: float  # the signed consults' minutes added up, for the rows added together
    within: int

    @property
    def total(self) -> int:
        return sum(self.exams.values())

    @property
    def mean_minutes(self) -> float | None:
        return self.minutes_total / self.signed if self.signed else None

    @property
    def within_share(self) -> float | None:
        return self.within / self.signed if self.signed else None


@dataclass
class MonthFigures:
    month: date
    county: Facility | None
    exams: dict[str, int]  # by kind
    saving: Decimal
    ledger_entries: int
    turnaround: Summary
    within: int
    within_by_kind: dict[str, tuple[int, int]]  # kind: (within, signed)
    townships: list[TownshipMonth]
    previous: Comparison
    last_year: Comparison
    trend: list[tuple[date, int, Decimal]]  # month, exams, saving; the last TREND_MONTHS
    limits: WithinLimit  # signed within the limit, by priority and kind (billing.reports.workload)
    travel: Travel  # saving per exam and per patient, travel saved (billing.reports.travel)
    kinds: list[str] = field(default_factory=lambda: list(ExamKind.values))

    @property
    def total_exams(self) -> int:
        return sum(self.exams.values())

    @property
    def signed(self) -> int:
        return self.turnaround.n

    @property
    def within_share(self) -> float | None:
        return self.within / self.signed if self.signed else None

    def headline(self) -> dict[str, object]:
        """What the list of reports shows, kept with the report as printed."""
        return {
            "exams": self.total_exams,
            "exams_by_kind": self.exams,
            "saving": str(self.saving),
            "signed": self.signed,
            "mean_minutes": self.turnaround.mean,
            "within_share": self.within_share,
        }


def _month_exams(first: date, last: date) -> tuple[int, Decimal]:
    """A month's exams (consults not cancelled, as the volume page counts) and saving (the
    ledger's, as the savings page totals it), in one sum over the rollup."""
    exams, saving = 0, ZERO
    for rows, _field in rollup_parts(Filters(date_from=first, date_to=last), by_radiologist=False):
        found = rows.aggregate(n=Sum("exams"), saving=Sum("saving"))
        exams += found["n"] or 0
        saving += money(found["saving"])
    return exams, saving


def exams_by_month(filters: Filters) -> dict[date, int]:
    """Exams (consults not cancelled) per month of exam date, from the rollup."""
    counts: dict[date, int] = {}
    for rows, date_field in rollup_parts(filters, by_radiologist=False):
        for r in rows.annotate(period=TruncMonth(date_field)).values("period").annotate(n=Sum("exams")).order_by():
            period = r["period"]
            month = period.date() if isinstance(period, datetime) else period
            counts[month] = counts.get(month, 0) + (r["n"] or 0)
    return counts


def _compare(month: date, exams: int, saving: Decimal) -> Comparison:
    first, last = month_range(month)
    before_exams, before_saving = _month_exams(first, last)
    return Comparison(month, before_exams, before_saving, growth(exams, before_exams), growth(saving, before_saving))


def _townships(
    by_facility: dict[int, TownshipMonth], facilities: dict[int, Facility], limit: int
) -> list[TownshipMonth]:
    ordered = [by_facility[f.pk] for f in township_order(facilities.values())]
    if len(ordered) <= limit:
        return ordered
    shown = sorted(ordered, key=lambda t: -t.total)[: limit - 1]
    keep = {id(t) for t in shown}
    rest = [t for t in ordered if id(t) not in keep]
    other = TownshipMonth(None, "", {k: 0 for k in ExamKind.values}, ZERO, 0, 0.0, 0)
    for t in rest:
        for kind, n in t.exams.items():
            other.exams[kind] = other.exams.get(kind, 0) + n
        other.saving += t.saving
        other.signed += t.signed
        other.minutes_total += t.minutes_total
        other.within += t.within
    other.label = str(len(rest))  # the PDF says "其余 N 个乡镇"
    return [*(t for t in ordered if id(t) in keep), other]


def month_figures(month: date, *, township_rows: int = TOWNSHIP_ROWS) -> MonthFigures:
    """Every figure of the month's report, from the dashboards' reports."""
    first, last = month_range(month)
    filters = Filters(date_from=first, date_to=last)
    tables = volume(filters)
    money_ = savings(filters)
    times = turnaround(filters, "month")

    facilities: dict[int, Facility] = {}
    by_facility: dict[int, TownshipMonth] = {}

    def row(facility: Facility) -> TownshipMonth:
        facilities.setdefault(facility.pk, facility)
        return by_facility.setdefault(
            facility.pk,
            TownshipMonth(facility, facility.short_name, {k: 0 for k in ExamKind.values}, ZERO, 0, 0.0, 0),
        )

    exams = {kind: 0 for kind in ExamKind.values}
    for table in tables:
        for volume_row in table.rows:
            row(volume_row.facility).exams[table.kind] += volume_row.total
            exams[table.kind] += volume_row.total
    for township in money_.by_township:
        row(township.facility).saving += township.saving
    for times_row in times.by_township:
        if times_row.facility is None or not times_row.n:
            continue
        t = row(times_row.facility)
        t.signed += times_row.n
        t.minutes_total += (times_row.consult.mean or 0.0) * times_row.n
        t.within += times_row.within_limit

    within_by_kind = {r.key: (r.within_limit, r.n) for r in times.by_kind}

    trend_first = first
    for _i in range(TREND_MONTHS - 1):
        trend_first = previous_month(trend_first)
    trend_filters = Filters(date_from=trend_first, date_to=last)
    trend_exams = exams_by_month(trend_filters)
    trend_saving = {date.fromisoformat(f"{r.key}-01"): r.saving for r in savings(trend_filters).by_month}
    trend = []
    cursor = trend_first
    while cursor <= first:
        trend.append((cursor, trend_exams.get(cursor, 0), trend_saving.get(cursor, ZERO)))
        cursor = month_end(cursor) + timedelta(days=1)

    total_exams = sum(exams.values())
    county = county_hospital()
    return MonthFigures(
        month=first,
        county=county,
        exams=exams,
        saving=money_.total.saving,
        ledger_entries=money_.total.entries,
        turnaround=times.total.consult,
        within=times.total.within_limit,
        within_by_kind=within_by_kind,
        townships=_townships(by_facility, facilities, township_rows),
        previous=_compare(previous_month(first), total_exams, money_.total.saving),
        last_year=_compare(first.replace(year=first.year - 1), total_exams, money_.total.saving),
        trend=trend,
        limits=within_limit(filters),
        travel=travel(filters),
    )
