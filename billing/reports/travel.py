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

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Case, Count, IntegerField, Q, QuerySet, Sum, Value, When

from billing.models import LedgerEntry
from billing.reports.common import ZERO, money, township_order
from billing.reports.filters import Filters
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


def travel(filters: Filters) -> Travel:
    """The savings per exam and per patient and the travel saved, by township and in all."""
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
