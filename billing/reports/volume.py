"""The volume report: exams per township and year, one table per exam kind."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncYear

from billing.reports.common import township_order
from billing.reports.filters import Filters, month_end, rollup_parts
from consults.models import Consult
from facilities.models import ExamKind, Facility, Modality


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
        end = month_end(date(year, start_month + 2, 1)) if quarter else date(year, 12, 31)
        first, last = max(first or start, start), min(last or end, end)
        if first > last:
            return 0
    scoped = Filters(first, last, filters.facility, filters.kind, filters.radiologist)
    parts = rollup_parts(scoped, by_radiologist=False)
    return sum(rows.aggregate(n=Sum(column))["n"] or 0 for rows, _field in parts)


def volume_consults(filters: Filters) -> QuerySet[Consult]:
    return Consult.objects.filter(filters.consult_q()).exclude(status=Consult.Status.CANCELLED)


def volume(filters: Filters) -> list[VolumeTable]:
    """Exams per township and year, one table per exam kind: the paper's Tables 1 (CT) and
    2 (DR). A township is a row when it has a machine of that kind or an exam of it."""
    cells: dict[tuple[str, int, int], int] = {}
    for rows, date_field in rollup_parts(filters, by_radiologist=False):
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
