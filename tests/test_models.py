"""The domain model's own rules, enforced by the database or the model itself."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import LedgerEntry, PriceItem, PriceSchedule
from cloudpacs.models import Patient
from consults.models import Consult, Report
from facilities.models import AuditEvent, ExamKind, Modality, RosterShift, User
from facilities.services import audit
from tests import factories

pytestmark = pytest.mark.django_db


def make_consult(township, **fields) -> Consult:
    return factories.make_consult(township, kind=ExamKind.DR, exam_date=timezone.localdate(), **fields)


def test_a_technologist_must_belong_to_a_facility():
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="nofac", role=User.Role.TECHNOLOGIST)


def test_patient_ids_are_unique_within_a_facility_but_may_repeat_across_facilities(township, other_township):
    Patient.objects.create(facility=township, patient_id="0001")
    Patient.objects.create(facility=other_township, patient_id="0001")
    with pytest.raises(IntegrityError), transaction.atomic():
        Patient.objects.create(facility=township, patient_id="0001")


def test_an_ae_title_belongs_to_one_modality(township, other_township):
    Modality.objects.create(facility=township, kind=ExamKind.DR, ae_title="XUANWO_DR")
    with pytest.raises(IntegrityError), transaction.atomic():
        Modality.objects.create(facility=other_township, kind=ExamKind.DR, ae_title="XUANWO_DR")


def test_an_ae_title_with_a_backslash_or_too_long_is_invalid(township):
    for bad in ["BAD\\AET", "A" * 17, ""]:
        modality = Modality(facility=township, kind=ExamKind.CT, ae_title=bad)
        with pytest.raises(ValidationError):
            modality.full_clean()


def test_a_consult_has_at_least_one_body_part(township):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_consult(township, body_parts=0)


def test_a_consult_cannot_be_signed_before_it_arrived(township):
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        make_consult(township, arrived_at=now, signed_at=now - timedelta(minutes=1))


def test_a_consult_cannot_be_delivered_unsigned(township):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_consult(township, delivered_at=timezone.now())


def test_a_shift_ends_after_it_starts(radiologist):
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        RosterShift.objects.create(radiologist=radiologist, starts_at=now, ends_at=now)


def test_a_signed_report_cannot_be_edited(township, radiologist):
    report = Report.objects.create(consult=make_consult(township), author=radiologist, findings="双肺纹理清晰。")
    report.impression = "未见异常。"
    report.save()
    report.signed_at = timezone.now()
    report.signed_by = radiologist
    report.save()
    report.impression = "改动"
    with pytest.raises(ValidationError):
        report.save()


def test_a_price_is_positive_and_one_per_kind_and_level():
    schedule = PriceSchedule.objects.create(code="t", name="t", effective_from=date(2021, 1, 1))
    with pytest.raises(IntegrityError), transaction.atomic():
        PriceItem.objects.create(schedule=schedule, exam_kind=ExamKind.CT, level=1, price_per_part=Decimal("0"))
    PriceItem.objects.create(schedule=schedule, exam_kind=ExamKind.CT, level=1, price_per_part=Decimal("150"))
    with pytest.raises(IntegrityError), transaction.atomic():
        PriceItem.objects.create(schedule=schedule, exam_kind=ExamKind.CT, level=1, price_per_part=Decimal("151"))


def test_the_ledger_is_append_only(township):
    schedule = PriceSchedule.objects.create(code="t", name="t", effective_from=date(2021, 1, 1))
    consult = make_consult(township)
    entry = LedgerEntry.objects.create(
        consult=consult,
        facility=township,
        exam_kind=ExamKind.DR,
        exam_date=consult.exam_date,
        body_parts=1,
        schedule=schedule,
        county_price=Decimal("40"),
        township_price=Decimal("32"),
        saving=Decimal("8"),
    )
    with pytest.raises(ValidationError):
        entry.save()
    with pytest.raises(ValidationError):
        entry.delete()
    with pytest.raises(ValidationError):
        LedgerEntry.objects.filter(pk=entry.pk).update(saving=Decimal("0"))
    with pytest.raises(ValidationError):
        LedgerEntry.objects.all().delete()
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            consult=consult,
            facility=township,
            exam_kind=ExamKind.DR,
            exam_date=consult.exam_date,
            body_parts=1,
            schedule=schedule,
            county_price=Decimal("40"),
            township_price=Decimal("32"),
            saving=Decimal("8"),
        )


def test_the_audit_trail_cannot_be_changed(technologist, township):
    event = audit("facilities.test.done", actor=technologist, obj=township)
    assert event.object_id == str(township.uuid)
    assert event.facility == township
    with pytest.raises(ValidationError):
        event.save()
    with pytest.raises(ValidationError):
        event.delete()
    with pytest.raises(ValidationError):
        AuditEvent.objects.update(action="x")
    with pytest.raises(ValidationError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 1
