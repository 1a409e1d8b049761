"""What each exam read from a township saved its patient: the price difference (the ledger),
on average per exam and per patient, and the journey to the county hospital not made.

An exam billed is an original ledger entry that has not been reversed (a reversal takes
its exam out, as it takes its saving out of the savings page, so the totals agree). Its
patient is its study's; an exam with no archived study counts as a patient of its own.
Patients are kept per township (Patient IDs are per facility), so the county's patients
are the townships' added up. Each exam is one round trip to the county hospital not made:
the facility's distance, fare and time (facilities.Facility, edited in the admin, the
Hanyin defaults and their sources in billing/hanyin.py) times the exams."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
from django.db.models import Case, Count, IntegerField, Q, QuerySet, Sum, Value, When

from billing import rollup
from billing.models import BilledPatients, LedgerEntry
from billing.reports.common import ZERO, money, township_order
from billing.reports.filters import Filters, rollup_parts, rollup_split
from facilities.models import Facility

CENT = Decimal("0.01")


def per(amount: Decimal, count: int) -> Decimal | None:
    """`amount` shared by `count`, to the fen, rounded half up; None for none."""
    return (amount / count).quantize(CENT, rounding=ROUND_HALF_UP) if count else None


@dataclass
class TownshipTravel:
    facility: Facility
    exams: int
    patients: int
    saving: Decimal  # the price difference, as on the savings page

    @property
    def known(self) -> bool:
        f = self.facility
        return f.county_distance_km is not None and f.round_trip_cost is not None and f.round_trip_minutes is not None

    @property
    def saving_per_exam(self) -> Decimal | None:
        return per(self.saving, self.exams)

    @property
    def saving_per_patient(self) -> Decimal | None:
        return per(self.saving, self.patients)

    @property
    def travel_cost(self) -> Decimal | None:
        cost = self.facility.round_trip_cost
        return None if cost is None else money(cost * self.exams)

    @property
    def travel_km(self) -> Decimal | None:
        km = self.facility.county_distance_km
        return None if km is None else 2 * km * self.exams

    @property
    def travel_hours(self) -> Decimal | None:
        minutes = self.facility.round_trip_minutes
        return None if minutes is None else (Decimal(minutes * self.exams) / 60).quantize(Decimal("0.1"))


@dataclass
class Travel:
    townships: list[TownshipTravel]
    exams: int
    patients: int
    saving: Decimal
    travel_cost: Decimal  # of the townships whose travel is known
    travel_km: Decimal
    travel_hours: Decimal
    unknown: list[Facility]  # townships with exams but no distance, fare or time

    @property
    def saving_per_exam(self) -> Decimal | None:
        return per(self.saving, self.exams)

    @property
    def saving_per_patient(self) -> Decimal | None:
        return per(self.saving, self.patients)


def billed_exams(filters: Filters) -> QuerySet[LedgerEntry]:
    """The ledger entries of the exams billed in the filters: originals not reversed."""
    return LedgerEntry.objects.filter(filters.ledger_q(), reverses__isnull=True, reversed_by__isnull=True)


def _billed(filters: Filters) -> dict[int, tuple[int, Decimal]]:
    """Each township's exams billed and their saving, from the rollup (`billed`: originals
    less reversals; `saving`: reversals included, which take out their original's)."""
    found: dict[int, tuple[int, Decimal]] = {}
    for rows, _date_field in rollup_parts(filters, by_radiologist=False):
        sums = rows.values("facility_id").annotate(exams=Sum("billed"), saving=Sum("saving")).order_by()
        for r in sums:
            exams, saving = found.get(r["facility_id"], (0, ZERO))
            found[r["facility_id"]] = (exams + (r["exams"] or 0), saving + money(r["saving"]))
    return {f: (exams, saving) for f, (exams, saving) in found.items() if exams}


def billed_patients(filters: Filters) -> dict[int, int]:
    """Each township's patients of the exams billed in the filters (by date, township and
    kind). All time is one stored count a township; otherwise the patients' keys of the
    whole months (BilledPatients) and of the days at either end (the ledger) are united."""
    split = rollup_split(filters.date_from, filters.date_to)
    stored = BilledPatients.objects.all()
    if filters.facility is not None:
        stored = stored.filter(facility=filters.facility)
    if split.months == (None, None) and not split.days:
        rows = stored.filter(month__isnull=True, kind=filters.kind or "").values_list("facility_id", "patients")
        return {facility: n for facility, n in rows if n}
    keys: dict[int, list[np.ndarray]] = {}
    if split.months is not None:
        first, last = split.months
        months = stored.filter(month__isnull=False)
        if filters.kind:
            months = months.filter(kind=filters.kind)
        if first is not None:
            months = months.filter(month__gte=first)
        if last is not None:
            months = months.filter(month__lte=last)
        for facility, blob in months.values_list("facility_id", "keys").order_by():
            keys.setdefault(facility, []).append(np.frombuffer(bytes(blob), dtype="<i8"))
    if split.days:
        days = Q()
        for first_day, last_day in split.days:
            days |= Q(exam_date__gte=first_day, exam_date__lte=last_day)
        entries = billed_exams(Filters(facility=filters.facility, kind=filters.kind)).filter(days)
        found = rollup.patient_keys(entries.values_list("facility_id", "consult__study__patient_id", "consult_id"))
        for (facility,), day_keys in found.items():
            keys.setdefault(facility, []).append(day_keys)
    return {facility: int(np.unique(np.concatenate(parts)).size) for facility, parts in keys.items()}


def _totalled(townships: list[TownshipTravel]) -> Travel:
    """The townships' rows with their totals; travel only where a township's is known."""
    known = [t for t in townships if t.known]
    return Travel(
        townships=townships,
        exams=sum(t.exams for t in townships),
        patients=sum(t.patients for t in townships),
        saving=sum((t.saving for t in townships), ZERO),
        travel_cost=sum((t.travel_cost or ZERO for t in known), ZERO),
        travel_km=sum((t.travel_km or ZERO for t in known), Decimal(0)),
        travel_hours=sum((t.travel_hours or ZERO for t in known), Decimal(0)),
        unknown=[t.facility for t in townships if not t.known],
    )


def travel(filters: Filters) -> Travel:
    """The savings per exam and per patient and the travel saved, by township and in all.
    From the rollup: the exams and saving of `_billed`, the patients of `billed_patients`
    (tests hold both to the ledger's raw rows)."""
    ledger_filters = replace(filters, radiologist=None)  # ledger entries carry no radiologist
    found = _billed(ledger_filters)
    patients = billed_patients(ledger_filters)
    facilities = township_order(Facility.objects.filter(pk__in=found))
    townships = [TownshipTravel(f, found[f.pk][0], patients.get(f.pk, 0), found[f.pk][1]) for f in facilities]
    return _totalled(townships)


def travel_raw(filters: Filters) -> Travel:
    """`travel` from the ledger's raw rows: the oracle the tests hold the rollup's to."""
    rows = (
        billed_exams(filters)
        .values("facility_id")
        .annotate(
            exams=Count("id"),
            saving=Sum("saving"),
            patients=Count("consult__study__patient_id", distinct=True),
            without_study=Sum(
                Case(When(Q(consult__study__isnull=True), then=Value(1)), default=Value(0), output_field=IntegerField())
            ),
        )
        .order_by()
    )
    found = {r["facility_id"]: r for r in rows}
    facilities = township_order(Facility.objects.filter(pk__in=found))
    townships = [
        TownshipTravel(
            f,
            found[f.pk]["exams"],
            found[f.pk]["patients"] + (found[f.pk]["without_study"] or 0),
            money(found[f.pk]["saving"]),
        )
        for f in facilities
    ]
    return _totalled(townships)
