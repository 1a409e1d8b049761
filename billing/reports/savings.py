"""The savings report: the ledger's totals from the rollup, the price editions that priced
them, and the exams billed on an unconfirmed count of body parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, Min, QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.utils.translation import gettext_lazy as _

from billing.models import (
    LedgerEntry,
    PriceSchedule,
)
from billing.reports.common import ZERO, money, township_order, wan
from billing.reports.filters import Filters, rollup_parts
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
