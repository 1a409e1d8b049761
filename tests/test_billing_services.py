"""billing.services: which price edition applies, and the append-only savings ledger."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from billing.models import LedgerEntry, PriceSchedule
from billing.services import (
    SHAANXI_2021_PRICES,
    AlreadyReversed,
    BillingError,
    NoScheduleInForce,
    NotBillable,
    PriceBook,
    add_schedule,
    ensure_shaanxi_2021_schedule,
    ledger_entry_for,
    prices_for,
    record_saving,
    reverse_entry,
    schedule_in_force,
)
from consults.models import Consult
from facilities.models import AuditEvent, ExamKind, Facility, User

CT, DR = ExamKind.CT, ExamKind.DR
COUNTY, TOWNSHIP = Facility.Level.SECOND, Facility.Level.FIRST


def prices(ct: tuple[str, str], dr: tuple[str, str]) -> dict[tuple[str, int], tuple[str, Decimal]]:
    return {
        (CT, COUNTY): ("CT", Decimal(ct[0])),
        (CT, TOWNSHIP): ("CT", Decimal(ct[1])),
        (DR, COUNTY): ("DR", Decimal(dr[0])),
        (DR, TOWNSHIP): ("DR", Decimal(dr[1])),
    }


@pytest.fixture
def two_editions(db) -> tuple[PriceSchedule, PriceSchedule]:
    old = add_schedule("old", "旧版", date(2021, 1, 1), date(2024, 12, 31), prices(("180", "150"), ("40", "32")))
    new = add_schedule("new", "新版", date(2025, 1, 1), None, prices(("200", "160"), ("45", "35")))
    return old, new


def signed_consult(facility: Facility, radiologist: User, *, kind: str = CT, parts: int = 1, day: date) -> Consult:
    arrived = datetime(day.year, day.month, day.day, 9, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    return Consult.objects.create(
        facility=facility,
        kind=kind,
        exam_date=day,
        body_parts=parts,
        status=Consult.Status.SIGNED,
        radiologist=radiologist,
        arrived_at=arrived,
        assigned_at=arrived + timedelta(minutes=1),
        opened_at=arrived + timedelta(minutes=10),
        signed_at=arrived + timedelta(minutes=40),
    )


def test_the_edition_in_force_on_the_exam_date_prices_the_exam(two_editions):
    old, new = two_editions
    assert prices_for(CT, date(2024, 6, 1)) == (old, Decimal("180.00"), Decimal("150.00"))
    assert prices_for(DR, date(2025, 3, 1)) == (new, Decimal("45.00"), Decimal("35.00"))


def test_both_ends_of_an_editions_range_are_in_force(two_editions):
    old, new = two_editions
    assert schedule_in_force(date(2021, 1, 1)) == old
    assert schedule_in_force(date(2024, 12, 31)) == old
    assert schedule_in_force(date(2025, 1, 1)) == new


def test_a_date_before_any_edition_is_a_clear_error(two_editions):
    with pytest.raises(NoScheduleInForce, match="2020-06-01"):
        schedule_in_force(date(2020, 6, 1))


def test_overlapping_editions_are_refused(two_editions):
    with pytest.raises(ValidationError):
        add_schedule("overlap", "重叠", date(2024, 12, 1), date(2025, 2, 1), prices(("1", "1"), ("1", "1")))
    # The open-ended edition runs forever, so nothing may start after it either.
    with pytest.raises(ValidationError):
        add_schedule("later", "更新版", date(2030, 1, 1), None, prices(("1", "1"), ("1", "1")))
    assert PriceSchedule.objects.count() == 2


def test_an_edition_may_not_end_before_it_starts(db):
    with pytest.raises(ValidationError):
        add_schedule("backwards", "倒置", date(2025, 1, 1), date(2024, 1, 1), prices(("2", "1"), ("2", "1")))


def test_prices_must_be_positive(db):
    with pytest.raises(ValidationError):
        add_schedule("free", "免费", date(2021, 1, 1), None, prices(("0", "0"), ("40", "32")))
    assert not PriceSchedule.objects.exists()


def test_the_shaanxi_2021_edition_has_the_papers_prices_and_is_created_once(db):
    schedule = ensure_shaanxi_2021_schedule()
    assert ensure_shaanxi_2021_schedule() == schedule
    assert schedule.code == "shaanxi-2021"
    assert schedule.name == "陕西省医疗服务项目价格（2021 版）"
    assert (schedule.effective_from, schedule.effective_to) == (date(2021, 1, 1), None)
    found = {(i.exam_kind, i.level): (i.item_name, i.price_per_part) for i in schedule.items.all()}
    assert found == SHAANXI_2021_PRICES
    assert found[(CT, COUNTY)] == ("多层螺旋CT平扫", Decimal(180))
    assert found[(DR, TOWNSHIP)] == ("数字化摄影(DR)", Decimal(32))


def test_a_signed_exam_makes_exactly_one_entry(township, radiologist):
    ensure_shaanxi_2021_schedule()
    consult = signed_consult(township, radiologist, kind=CT, parts=2, day=date(2025, 9, 1))
    entry = record_saving(consult, actor=radiologist)
    assert record_saving(consult) == entry
    assert LedgerEntry.objects.filter(consult=consult).count() == 1
    assert (entry.county_price, entry.township_price, entry.body_parts) == (Decimal(180), Decimal(150), 2)
    assert entry.saving == Decimal("60.00")
    assert entry.facility == township
    assert entry.exam_date == date(2025, 9, 1)
    events = AuditEvent.objects.filter(action="billing.saving.recorded")
    assert events.count() == 1
    assert events.get().actor == radiologist
    assert events.get().detail["saving"] == "60.00"


def test_a_dr_saves_eight_yuan_a_part(township, radiologist):
    ensure_shaanxi_2021_schedule()
    consult = signed_consult(township, radiologist, kind=DR, parts=3, day=date(2023, 5, 6))
    assert record_saving(consult).saving == Decimal("24.00")


def test_an_unsigned_consult_is_not_billed(township, radiologist):
    ensure_shaanxi_2021_schedule()
    consult = signed_consult(township, radiologist, day=date(2025, 9, 1))
    Consult.objects.filter(pk=consult.pk).update(status=Consult.Status.OPENED, signed_at=None)
    consult.refresh_from_db()
    with pytest.raises(NotBillable):
        record_saving(consult)
    assert not LedgerEntry.objects.exists()


def test_an_exam_at_the_county_hospital_saves_nothing_and_is_not_billed(county, radiologist):
    ensure_shaanxi_2021_schedule()
    with pytest.raises(NotBillable):
        record_saving(signed_consult(county, radiologist, day=date(2025, 9, 1)))


def test_an_exam_dated_outside_every_edition_is_not_recorded(township, radiologist):
    ensure_shaanxi_2021_schedule()
    with pytest.raises(NoScheduleInForce):
        record_saving(signed_consult(township, radiologist, day=date(2020, 12, 31)))
    assert not LedgerEntry.objects.exists()


def test_the_entry_uses_the_edition_of_the_exam_date_not_of_today(two_editions, township, radiologist):
    old, _new = two_editions
    entry = record_saving(signed_consult(township, radiologist, kind=CT, day=date(2024, 12, 31)))
    assert entry.schedule == old
    assert entry.saving == Decimal("30.00")


def test_the_bulk_path_prices_as_record_saving_does(two_editions, township, radiologist):
    book = PriceBook.load()
    for day in (date(2024, 12, 31), date(2025, 1, 1)):
        consult = signed_consult(township, radiologist, kind=DR, parts=2, day=day)
        bulk = ledger_entry_for(consult, book)
        live = record_saving(consult)
        fields = ("schedule_id", "county_price", "township_price", "body_parts", "saving", "exam_date", "facility_id")
        assert [getattr(bulk, f) for f in fields] == [getattr(live, f) for f in fields]


def test_a_reversal_cancels_the_saving_and_keeps_the_reason(township, radiologist, administrator):
    ensure_shaanxi_2021_schedule()
    consult = signed_consult(township, radiologist, kind=CT, parts=2, day=date(2025, 9, 1))
    entry = record_saving(consult)
    reversal = reverse_entry(entry, "  部位数录入错误  ", administrator)
    assert reversal.reverses == entry
    assert reversal.reason == "部位数录入错误"
    assert (reversal.body_parts, reversal.saving) == (-2, Decimal("-60.00"))
    assert sum(e.saving for e in LedgerEntry.objects.filter(consult=consult)) == 0
    event = AuditEvent.objects.get(action="billing.saving.reversed")
    assert event.actor == administrator
    assert event.detail["reason"] == "部位数录入错误"
    # The reversed exam is not billed again by a repeated call.
    assert record_saving(consult) == entry


def test_an_entry_is_reversed_once_only(township, radiologist, administrator):
    ensure_shaanxi_2021_schedule()
    entry = record_saving(signed_consult(township, radiologist, day=date(2025, 9, 1)))
    reversal = reverse_entry(entry, "重复检查", administrator)
    with pytest.raises(AlreadyReversed):
        reverse_entry(entry, "再次冲正", administrator)
    with pytest.raises(BillingError):
        reverse_entry(reversal, "冲正的冲正", administrator)
    assert LedgerEntry.objects.count() == 2


def test_a_reversal_needs_a_reason(township, radiologist, administrator):
    ensure_shaanxi_2021_schedule()
    entry = record_saving(signed_consult(township, radiologist, day=date(2025, 9, 1)))
    with pytest.raises(ValidationError):
        reverse_entry(entry, "   ", administrator)
    assert LedgerEntry.objects.count() == 1


def test_the_ledger_refuses_edits_and_deletions(township, radiologist):
    ensure_shaanxi_2021_schedule()
    entry = record_saving(signed_consult(township, radiologist, day=date(2025, 9, 1)))
    entry.saving = Decimal("999.00")
    with pytest.raises(ValidationError):
        entry.save()
    with pytest.raises(ValidationError):
        LedgerEntry.objects.filter(pk=entry.pk).delete()
