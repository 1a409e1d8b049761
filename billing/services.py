"""Services of the billing app: which price edition applies, and the savings ledger.

An exam read for a township costs the patient the township (一级) price instead of the
county (二级) price. The ledger keeps one original entry per signed exam, priced by the
edition in force on the exam date; a correction is a reversing entry with a reason, never
an edit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from billing import rollup
from billing.models import LedgerEntry, PriceItem, PriceSchedule
from consults.models import Consult
from facilities.models import ExamKind, Facility, User
from facilities.services import audit

logger = logging.getLogger("yunying.billing")

CENT = Decimal("0.01")

COUNTY_LEVEL = Facility.Level.SECOND
TOWNSHIP_LEVEL = Facility.Level.FIRST

SHAANXI_2021_CODE = "shaanxi-2021"
SHAANXI_2021_NAME = "陕西省医疗服务项目价格（2021 版）"
# The edition's source: the Shaanxi healthcare security administration's notice, as the
# paper cites it (its reference 5), dated 2022-02-23.
SHAANXI_2021_SOURCE = "陕西省医疗保障局关于印发《陕西省医疗服务项目价格(2021版)》的通知"
SHAANXI_2021_URL = "https://ybj.shaanxi.gov.cn/zfxxgk/fdzdgnr/tzgg/202202/t20220223_2369326.shtml"
SHAANXI_2021_PUBLISHED = date(2022, 2, 23)
# The ledger applies it from the start of the year of its edition, before the notice's
# date: the paper prices every exam of its study (from 2022-01-01) with this list, and no
# earlier edition's prices are on record here, so the exams of 2022-01-01 to 2022-02-22
# are priced by it too, and marked as such on the savings page.
SHAANXI_2021_FROM = date(2021, 1, 1)
SHAANXI_2021_BASIS = (
    "通知发布于 2022-02-23，本版名为 2021 版。台账自 2021-01-01 起按本版计价："
    "汉阴县自 2022-01-01 起的全部检查一律按本版价格计算节省费用，本系统也没有更早版本的价格；"
    "因此 2022-01-01 至 2022-02-22 的检查也按本版计价，早于通知发布日期。"
)
# (kind, level) -> (item name, yuan per body part), as the paper quotes the 2021 edition.
SHAANXI_2021_PRICES: dict[tuple[str, int], tuple[str, Decimal]] = {
    (ExamKind.CT, COUNTY_LEVEL): ("多层螺旋CT平扫", Decimal("180.00")),
    (ExamKind.CT, TOWNSHIP_LEVEL): ("多层螺旋CT平扫", Decimal("150.00")),
    (ExamKind.DR, COUNTY_LEVEL): ("数字化摄影(DR)", Decimal("40.00")),
    (ExamKind.DR, TOWNSHIP_LEVEL): ("数字化摄影(DR)", Decimal("32.00")),
}


class BillingError(Exception):
    """A billing rule refused the request; the message says which."""


class NoScheduleInForce(BillingError):
    pass


class MissingPrice(BillingError):
    pass


class NotBillable(BillingError):
    pass


class AlreadyReversed(BillingError):
    pass


def _in_force_on(exam_date: date) -> Q:
    return Q(effective_from__lte=exam_date) & (Q(effective_to__isnull=True) | Q(effective_to__gte=exam_date))


def schedule_in_force(exam_date: date) -> PriceSchedule:
    """The one price edition in force on exam_date (both ends of its range included)."""
    found = list(PriceSchedule.objects.filter(_in_force_on(exam_date)).order_by("-effective_from")[:2])
    if not found:
        raise NoScheduleInForce(f"no price schedule is in force on {exam_date.isoformat()}")
    if len(found) > 1:
        raise BillingError(
            f"price schedules {found[0].code} and {found[1].code} are both in force on {exam_date.isoformat()}"
        )
    return found[0]


def prices_for(kind: str, exam_date: date) -> tuple[PriceSchedule, Decimal, Decimal]:
    """(schedule, county price, township price) per body part of `kind` on exam_date."""
    schedule = schedule_in_force(exam_date)
    items = PriceItem.objects.filter(schedule=schedule, exam_kind=kind, level__in=[COUNTY_LEVEL, TOWNSHIP_LEVEL])
    prices = {item.level: item.price_per_part for item in items}
    if COUNTY_LEVEL not in prices or TOWNSHIP_LEVEL not in prices:
        raise MissingPrice(f"price schedule {schedule.code} lacks a county or township price for {kind}")
    return schedule, prices[COUNTY_LEVEL], prices[TOWNSHIP_LEVEL]


def saving_for(county_price: Decimal, township_price: Decimal, body_parts: int) -> Decimal:
    """What the patient did not pay: the price difference for each body part."""
    return ((county_price - township_price) * body_parts).quantize(CENT)


@dataclass
class PriceBook:
    """Every edition and its prices loaded once, for pricing many exams without a query
    each (the demo's history). Chooses exactly as `prices_for` does."""

    schedules: list[PriceSchedule] = field(default_factory=list)
    prices: dict[tuple[int, str, int], Decimal] = field(default_factory=dict)

    @classmethod
    def load(cls) -> PriceBook:
        book = cls(schedules=list(PriceSchedule.objects.order_by("-effective_from")))
        for item in PriceItem.objects.all():
            book.prices[(item.schedule_id, item.exam_kind, item.level)] = item.price_per_part
        return book

    def schedule_on(self, exam_date: date) -> PriceSchedule:
        found = [
            s
            for s in self.schedules
            if s.effective_from <= exam_date and (s.effective_to is None or s.effective_to >= exam_date)
        ]
        if not found:
            raise NoScheduleInForce(f"no price schedule is in force on {exam_date.isoformat()}")
        if len(found) > 1:
            raise BillingError(
                f"price schedules {found[0].code} and {found[1].code} are both in force on {exam_date.isoformat()}"
            )
        return found[0]

    def prices_for(self, kind: str, exam_date: date) -> tuple[PriceSchedule, Decimal, Decimal]:
        schedule = self.schedule_on(exam_date)
        try:
            return (
                schedule,
                self.prices[(schedule.pk, kind, COUNTY_LEVEL)],
                self.prices[(schedule.pk, kind, TOWNSHIP_LEVEL)],
            )
        except KeyError:
            raise MissingPrice(f"price schedule {schedule.code} lacks a county or township price for {kind}") from None


def ledger_values_for(consult: Consult, book: PriceBook | None = None) -> dict[str, Any]:
    """The field values of a signed consult's original entry: what record_saving stores."""
    schedule, county_price, township_price = (book.prices_for if book else prices_for)(consult.kind, consult.exam_date)
    return {
        "consult_id": consult.pk,
        "facility_id": consult.facility_id,
        "exam_kind": consult.kind,
        "exam_date": consult.exam_date,
        "body_parts": consult.body_parts,
        # The parts are confirmed when they were named (by the order or the request);
        # otherwise the consult's count is the default of one part.
        "parts_confirmed": bool(consult.body_part_names.strip()),
        "schedule_id": schedule.pk,
        "county_price": county_price,
        "township_price": township_price,
        "saving": saving_for(county_price, township_price, consult.body_parts),
    }


def ledger_entry_for(consult: Consult, book: PriceBook | None = None) -> LedgerEntry:
    return LedgerEntry(**ledger_values_for(consult, book))


def _original_entry(consult: Consult) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(consult=consult, reverses__isnull=True).first()


def record_saving(consult: Consult, *, actor: User | None = None) -> LedgerEntry:
    """Record the saving of one signed exam, once: a second call returns the first entry
    (also after it has been reversed; a reversed exam is not billed again)."""
    if consult.signed_at is None or consult.status not in {Consult.Status.SIGNED, Consult.Status.DELIVERED}:
        raise NotBillable(f"consult {consult.uuid} is not signed")
    if not consult.facility.is_township:
        raise NotBillable(f"consult {consult.uuid} was not examined at a township")
    with transaction.atomic():
        existing = _original_entry(consult)
        if existing is not None:
            return existing
        entry = ledger_entry_for(consult)
        try:
            with transaction.atomic():
                entry.save()
        except IntegrityError:
            # Another worker recorded it between our look and our insert.
            existing = _original_entry(consult)
            if existing is None:
                raise
            return existing
        # The signed consult and its entry reach the dashboards in this same transaction.
        rollup.refresh_day(entry.exam_date, consult.facility)
        audit(
            "billing.saving.recorded",
            actor=actor,
            obj=entry,
            facility=consult.facility,
            consult=str(consult.uuid),
            schedule=entry.schedule.code,
            exam_kind=entry.exam_kind,
            body_parts=entry.body_parts,
            saving=str(entry.saving),
        )
    return entry


def record_pending_savings(limit: int = 500) -> list[LedgerEntry]:
    """Ledger entries for signed township exams that have none yet, oldest first.

    Exams with no price edition in force are left out and logged, not guessed: they are
    billed on a later run once an administrator has entered the edition."""
    pending = (
        Consult.objects.filter(
            status__in=[Consult.Status.SIGNED, Consult.Status.DELIVERED],
            signed_at__isnull=False,
            facility__kind=Facility.Kind.TOWNSHIP_CENTRE,
        )
        .exclude(ledger_entries__isnull=False)
        .select_related("facility")
        .order_by("signed_at")[:limit]
    )
    recorded = []
    for consult in pending:
        try:
            recorded.append(record_saving(consult))
        except (NoScheduleInForce, MissingPrice) as error:
            logger.warning("no saving recorded for consult %s: %s", consult.uuid, error)
    return recorded


def reverse_entry(entry: LedgerEntry, reason: str, actor: User | None) -> LedgerEntry:
    """Cancel an original entry with a negative one that says why. Once only."""
    reason = reason.strip()
    if not reason:
        raise ValidationError(_("冲正必须填写原因。"))
    if entry.reverses_id is not None:
        raise BillingError(f"ledger entry {entry.pk} is itself a reversal")
    if LedgerEntry.objects.filter(reverses=entry).exists():
        raise AlreadyReversed(f"ledger entry {entry.pk} is already reversed")
    reversal = LedgerEntry(
        consult_id=entry.consult_id,
        facility_id=entry.facility_id,
        exam_kind=entry.exam_kind,
        exam_date=entry.exam_date,
        body_parts=-entry.body_parts,
        parts_confirmed=entry.parts_confirmed,
        schedule_id=entry.schedule_id,
        county_price=entry.county_price,
        township_price=entry.township_price,
        saving=-entry.saving,
        reverses=entry,
        reason=reason[:255],
    )
    try:
        with transaction.atomic():
            reversal.save()
            rollup.refresh_day(reversal.exam_date, entry.facility)
            audit(
                "billing.saving.reversed",
                actor=actor,
                obj=reversal,
                facility=entry.facility,
                reverses=entry.pk,
                reason=reversal.reason,
                saving=str(reversal.saving),
            )
    except IntegrityError:
        raise AlreadyReversed(f"ledger entry {entry.pk} is already reversed") from None
    return reversal


def validate_schedule(schedule: PriceSchedule) -> None:
    """Refuse an edition whose range is backwards or overlaps another edition's: on any
    exam date exactly one edition may be in force."""
    if schedule.effective_to is not None and schedule.effective_to < schedule.effective_from:
        raise ValidationError({"effective_to": _("失效日期不能早于生效日期。")})
    others = PriceSchedule.objects.exclude(pk=schedule.pk) if schedule.pk else PriceSchedule.objects.all()
    overlap = others.filter(Q(effective_to__isnull=True) | Q(effective_to__gte=schedule.effective_from))
    if schedule.effective_to is not None:
        overlap = overlap.filter(effective_from__lte=schedule.effective_to)
    clash = overlap.order_by("effective_from").first()
    if clash is not None:
        raise ValidationError(_("与价格标准「%(name)s」的有效期重叠。") % {"name": clash.name})


def validate_price(price: Decimal) -> None:
    if price <= 0:
        raise ValidationError(_("价格必须大于零。"))


@transaction.atomic
def add_schedule(
    code: str,
    name: str,
    effective_from: date,
    effective_to: date | None,
    prices: dict[tuple[str, int], tuple[str, Decimal]],
) -> PriceSchedule:
    """Create an edition with its prices, after checking it fits between the others."""
    schedule = PriceSchedule(code=code, name=name, effective_from=effective_from, effective_to=effective_to)
    validate_schedule(schedule)
    for _item_name, price in prices.values():
        validate_price(price)
    schedule.save()
    PriceItem.objects.bulk_create(
        PriceItem(schedule=schedule, exam_kind=kind, level=level, item_name=item_name, price_per_part=price)
        for (kind, level), (item_name, price) in prices.items()
    )
    return schedule


@transaction.atomic
def ensure_shaanxi_2021_schedule() -> PriceSchedule:
    """The Shaanxi 2021 edition with its CT and DR prices; created once, never changed
    afterwards (entries already priced by it must stay traceable)."""
    schedule = PriceSchedule.objects.filter(code=SHAANXI_2021_CODE).first()
    if schedule is None:
        schedule = add_schedule(SHAANXI_2021_CODE, SHAANXI_2021_NAME, SHAANXI_2021_FROM, None, SHAANXI_2021_PRICES)
    # Where the prices come from is filled in where it is missing; the prices and dates of
    # an edition already in use are never touched.
    if not schedule.source:
        schedule.source = SHAANXI_2021_SOURCE
        schedule.source_url = SHAANXI_2021_URL
        schedule.published_on = SHAANXI_2021_PUBLISHED
        schedule.basis = SHAANXI_2021_BASIS
        schedule.save(update_fields=["source", "source_url", "published_on", "basis"])
    present = set(schedule.items.values_list("exam_kind", "level"))
    missing = [key for key in SHAANXI_2021_PRICES if key not in present]
    PriceItem.objects.bulk_create(
        PriceItem(
            schedule=schedule,
            exam_kind=kind,
            level=level,
            item_name=SHAANXI_2021_PRICES[(kind, level)][0],
            price_per_part=SHAANXI_2021_PRICES[(kind, level)][1],
        )
        for kind, level in missing
    )
    return schedule
