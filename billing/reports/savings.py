"""The savings report: the ledger's totals from the rollup, the price editions that priced
them, and the exams billed on an unconfirmed count of body parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.utils.translation import gettext_lazy as _

from billing.models import (
    DailyRollup,
    LedgerEntry,
    PriceSchedule,
)
from billing.reports.common import ZERO, money, township_order, wan
from billing.reports.filters import ONE_DAY, Filters, rollup_parts
from facilities.models import ExamKind, Facility


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
            for rows, date_field in rollup_parts(filters, by_radiologist=False)
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
    """The editions that priced the ledger entries of the filters, oldest first.

    Each entry keeps the edition that priced it, and the ledger picks the edition in force
    on the exam date, so an edition's entries are the entries of the exam dates it applies
    to, as long as that still holds: its entries' first and last exam dates (two probes of
    the index on edition and date) lie within its dates, and no other edition's dates
    overlap them (an administrator may have edited them since). Then its figures come from
    the rollup, which a province's millions of entries need; otherwise from its entries."""
    schedules = list(PriceSchedule.objects.order_by("effective_from", "pk"))
    uses = []
    for schedule in schedules:
        use = _edition_from_rollup(schedule, schedules, filters)
        if use is _UNSURE:
            use = _edition_from_ledger(schedule, filters)
        if isinstance(use, EditionUse):
            uses.append(use)
    return uses


_UNSURE = object()


def _applies(schedule: PriceSchedule) -> tuple[date, date]:
    return schedule.effective_from, schedule.effective_to or date.max


def _edition_from_rollup(schedule: PriceSchedule, schedules: list[PriceSchedule], filters: Filters) -> object:
    """The EditionUse from the rollup, None if it priced nothing in the filters, or
    _UNSURE where its entries are not the entries of its dates."""
    start, end = _applies(schedule)
    others = [_applies(other) for other in schedules if other.pk != schedule.pk]
    if any(first <= end and start <= last for first, last in others):
        return _UNSURE
    entries = LedgerEntry.objects.filter(schedule=schedule)
    first_ever = entries.order_by("exam_date").values_list("exam_date", flat=True).first()
    if first_ever is None:
        return None
    last_ever = entries.order_by("-exam_date").values_list("exam_date", flat=True).first()
    assert last_ever is not None
    if first_ever < start or last_ever > end:
        return _UNSURE
    window_from = max(start, filters.date_from) if filters.date_from else start
    window_to = min(end, filters.date_to) if filters.date_to else end
    if window_from > window_to:
        return None
    window = Filters(window_from, None if window_to == date.max else window_to, filters.facility, filters.kind)
    n = _ledger_entries(window)
    if not n:
        return None
    days = DailyRollup.objects.filter(
        window.rollup_q(), ~Q(ledger_entries=0), day__gte=window_from, day__lte=window_to
    ).order_by()
    first = days.order_by("day").values_list("day", flat=True).first()
    last = days.order_by("-day").values_list("day", flat=True).first()
    assert first is not None and last is not None
    early = 0
    if schedule.published_on is not None and first < schedule.published_on:
        early = _ledger_entries(
            Filters(window_from, min(window_to, schedule.published_on - ONE_DAY), filters.facility, filters.kind)
        )
    return EditionUse(schedule, first, last, n, early)


def _ledger_entries(filters: Filters) -> int:
    """Ledger entries (reversals included) of the filters, from the rollup."""
    parts = rollup_parts(filters, by_radiologist=False)
    return sum(rows.aggregate(n=Sum("ledger_entries"))["n"] or 0 for rows, _field in parts)


def _edition_from_ledger(schedule: PriceSchedule, filters: Filters) -> EditionUse | None:
    """The EditionUse counted from the edition's entries themselves."""
    entries = LedgerEntry.objects.filter(filters.ledger_q(), schedule=schedule).order_by()
    found = entries.aggregate(first=Min("exam_date"), last=Max("exam_date"), n=Count("id"))
    if not found["n"]:
        return None
    early = 0
    if schedule.published_on is not None and found["first"] < schedule.published_on:
        early = entries.filter(exam_date__lt=schedule.published_on).count()
    return EditionUse(schedule, found["first"], found["last"], found["n"], early)


def unconfirmed_parts(filters: Filters) -> int:
    """How many exams of the selection are billed for a count of body parts nobody named
    (no order or request gave them: counted as one part). A partial index holds only those
    entries (ledger_unconfirmed_date), so this counts them, not the whole ledger."""
    return LedgerEntry.objects.filter(filters.ledger_q(), reverses__isnull=True, parts_confirmed=False).count()
