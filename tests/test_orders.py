"""Orders (检查申请) and the body-part vocabulary: registering, cancelling, and linking an
arriving study to its order, which the consult then takes its details from."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from django.utils import timezone

from cloudpacs import orders
from cloudpacs.models import BodyPart, Order, OrderPriority, Study
from consults.models import Consult
from consults.services import open_consult_for_study
from facilities.models import AuditEvent, ExamKind, User
from tests.factories import make_study, make_user

pytestmark = pytest.mark.django_db


def parts(*codes: str) -> list[BodyPart]:
    return [BodyPart.objects.get(code=code) for code in codes]


def register(technologist, modality, **fields):
    fields.setdefault("patient_id", "XW0001")
    fields.setdefault("patient_name", "张三")
    fields.setdefault("body_parts", parts("CHEST"))
    fields.setdefault("scheduled_at", timezone.make_aware(datetime(2025, 9, 1, 9, 30)))
    return orders.register_order(technologist, modality=modality, **fields)


# --- The vocabulary ------------------------------------------------------------------------


def test_the_vocabulary_ships_with_the_parts_consoles_write():
    for value in ["HEAD", "CHEST", "ABDOMEN", "PELVIS", "CSPINE", "TSPINE", "LSPINE", "KNEE"]:
        assert orders.body_part_for(value) is not None, value


def test_a_part_is_named_by_its_code_or_a_body_part_examined_value_in_either_language():
    assert orders.body_part_name("CHEST") == "胸部"
    assert orders.body_part_name("thorax") == "胸部"
    assert orders.body_part_name("BRAIN", "en") == "Head"
    assert orders.body_part_name("LSSPINE", "en") == "Lumbar spine"


def test_an_unknown_value_is_named_as_it_is():
    assert orders.body_part_name("ELBOWISH") == "ELBOWISH"
    assert orders.body_part_name("") == ""


def test_the_parts_for_a_kind_leave_out_those_that_do_not_apply():
    ct = {part.code for part in orders.body_parts_for_kind(ExamKind.CT)}
    dr = {part.code for part in orders.body_parts_for_kind(ExamKind.DR)}
    assert "NECK" in ct and "NECK" not in dr
    assert "HAND" in dr and "HAND" not in ct
    assert {"HEAD", "CHEST"} <= ct & dr


# --- Registering and cancelling -------------------------------------------------------------


def test_registering_issues_an_accession_number_and_a_study_uid_and_is_audited(technologist, ct_modality):
    order = register(technologist, ct_modality, body_parts=parts("CHEST", "ABDOMEN"))
    again = register(technologist, ct_modality, patient_id="XW0002")
    assert order.accession_number.startswith("Y") and len(order.accession_number) <= 16
    assert again.accession_number != order.accession_number
    assert order.study_instance_uid and order.kind == ExamKind.CT
    assert order.status == Order.Status.SCHEDULED and order.facility == ct_modality.facility
    event = AuditEvent.objects.get(action="cloudpacs.order.registered", object_id=str(order.uuid))
    assert event.actor == technologist and event.detail["body_parts"] == ["CHEST", "ABDOMEN"]


def test_another_townships_technologist_cannot_register_on_this_townships_console(outsider, ct_modality):
    with pytest.raises(orders.OrderNotAllowed):
        register(outsider, ct_modality)
    assert not Order.objects.exists()


def test_a_radiologist_cannot_register_an_exam(radiologist, ct_modality):
    with pytest.raises(orders.OrderNotAllowed):
        register(radiologist, ct_modality)


def test_a_part_that_does_not_apply_to_the_kind_is_refused(technologist, ct_modality):
    with pytest.raises(orders.OrderError, match="手"):
        register(technologist, ct_modality, body_parts=parts("HAND"))
    with pytest.raises(orders.OrderError):
        register(technologist, ct_modality, body_parts=[])
    assert not Order.objects.exists()


def test_an_order_never_performed_can_be_cancelled_once(technologist, ct_modality):
    order = register(technologist, ct_modality)
    orders.cancel_order(order, technologist)
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and order.cancelled_at is not None
    assert AuditEvent.objects.filter(action="cloudpacs.order.cancelled", object_id=str(order.uuid)).exists()
    with pytest.raises(orders.OrderError):
        orders.cancel_order(order, technologist)


def test_an_order_whose_images_arrived_cannot_be_cancelled(technologist, ct_modality):
    order = register(technologist, ct_modality)
    study = make_study(ct_modality.facility, ct_modality, accession_number=order.accession_number)
    assert orders.order_for_study(study) == order
    with pytest.raises(orders.OrderError):
        orders.cancel_order(order, technologist)


def test_another_township_cannot_cancel(technologist, outsider, ct_modality):
    order = register(technologist, ct_modality)
    with pytest.raises(orders.OrderNotAllowed):
        orders.cancel_order(order, outsider)


# --- Matching at arrival ---------------------------------------------------------------------


def test_a_study_with_the_accession_number_is_linked_and_its_consult_takes_the_order(technologist, ct_modality):
    order = register(
        technologist,
        ct_modality,
        body_parts=parts("HEAD", "CHEST"),
        priority=OrderPriority.URGENT,
        clinical_history="头痛三天",
        question="排除出血",
    )
    study = make_study(
        ct_modality.facility, ct_modality, accession_number=order.accession_number, status=Study.Status.ARRIVED
    )
    consult = open_consult_for_study(study)
    order.refresh_from_db()
    assert order.study == study and order.matched_by == Order.Match.ACCESSION and not order.needs_confirmation
    assert order.status == Order.Status.COMPLETED
    assert consult.body_parts == 2 and consult.body_part_names == "头颅、胸部"
    assert consult.priority == "urgent" and consult.clinical_history == "头痛三天" and consult.question == "排除出血"
    assert consult.due_at is not None
    assert AuditEvent.objects.filter(action="cloudpacs.order.linked", object_id=str(order.uuid)).exists()


def test_without_the_accession_number_the_patient_id_and_date_link_it_for_confirmation(technologist, ct_modality):
    order = register(technologist, ct_modality, patient_id="XW0042", body_parts=parts("CHEST", "ABDOMEN", "PELVIS"))
    patient_study = make_study(
        ct_modality.facility, ct_modality, accession_number="CONSOLE-TYPED", study_date=date(2025, 9, 1)
    )
    patient_study.patient.patient_id = "XW0042"
    patient_study.patient.save()
    consult = open_consult_for_study(patient_study)
    order.refresh_from_db()
    assert order.study == patient_study and order.matched_by == Order.Match.PATIENT_DATE
    assert order.needs_confirmation
    assert consult.body_parts == 3
    orders.confirm_match(order, technologist)
    order.refresh_from_db()
    assert not order.needs_confirmation
    assert AuditEvent.objects.filter(action="cloudpacs.order.match_confirmed").exists()


def test_a_wrong_guess_is_rejected_and_the_order_goes_back_on_the_worklist(technologist, ct_modality):
    order = register(technologist, ct_modality, patient_id="XW0042")
    study = make_study(ct_modality.facility, ct_modality, study_date=date(2025, 9, 1))
    study.patient.patient_id = "XW0042"
    study.patient.save()
    assert orders.order_for_study(study) == order
    orders.reject_match(order, technologist)
    order.refresh_from_db()
    assert order.study is None and order.status == Order.Status.SCHEDULED
    assert orders.scheduled_steps(ct_modality.facility, orders.WorklistQuery()) == [order]


def test_the_patient_id_on_another_day_is_no_match(technologist, ct_modality):
    register(technologist, ct_modality, patient_id="XW0042")
    study = make_study(ct_modality.facility, ct_modality, study_date=date(2025, 9, 2))
    study.patient.patient_id = "XW0042"
    study.patient.save()
    assert orders.order_for_study(study) is None


def test_another_townships_order_is_never_linked(technologist, ct_modality, other_township):
    order = register(technologist, ct_modality)
    from tests.factories import make_modality

    elsewhere = make_modality(other_township, ExamKind.CT, "PINGLIANG_CT")
    study = make_study(other_township, elsewhere, accession_number=order.accession_number)
    assert orders.order_for_study(study) is None


def test_an_unmatched_study_opens_a_consult_as_before(ct_modality):
    study = make_study(ct_modality.facility, ct_modality, accession_number="NOORDER")
    consult = open_consult_for_study(study)
    assert consult.body_parts == 1 and consult.priority == "routine" and consult.body_part_names == ""
    assert Consult.objects.count() == 1


def test_a_cancelled_order_is_not_linked(technologist, ct_modality):
    order = register(technologist, ct_modality)
    orders.cancel_order(order, technologist)
    study = make_study(ct_modality.facility, ct_modality, accession_number=order.accession_number)
    assert orders.order_for_study(study) is None


# --- The worklist query ------------------------------------------------------------------------


def test_the_worklist_matches_names_with_wildcards_in_either_script(technologist, ct_modality):
    zhang = register(technologist, ct_modality, patient_name="张三", patient_name_pinyin="ZHANG^SAN")
    li = register(technologist, ct_modality, patient_name="李四", patient_id="XW0009")
    facility = ct_modality.facility
    assert orders.scheduled_steps(facility, orders.WorklistQuery(patient_name="张*")) == [zhang]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(patient_name="zhang*")) == [zhang]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(patient_name="张^三")) == [zhang]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(patient_name="ZHANG^SAN=张^三")) == [zhang]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(patient_name="李?")) == [li]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(patient_id="XW000?")) == [zhang, li]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(patient_name="王*")) == []


def test_the_worklist_filters_by_date_range_modality_and_station(technologist, ct_modality, dr_modality):
    facility = ct_modality.facility
    first = register(technologist, ct_modality)
    later = register(technologist, ct_modality, scheduled_at=timezone.make_aware(datetime(2025, 9, 3, 14, 0)))
    chest_film = register(technologist, dr_modality, body_parts=parts("CHEST"))
    day = timezone.make_aware(datetime(2025, 9, 1))
    one_day = orders.WorklistQuery(start=day, end=day + timedelta(days=1))
    assert orders.scheduled_steps(facility, one_day) == [first, chest_film]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(modality="DX")) == [chest_film]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(modality="CT")) == [first, later]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(station_ae_title="XUANWO_DR")) == [chest_film]
    assert orders.scheduled_steps(facility, orders.WorklistQuery(start=day + timedelta(days=2))) == [later]


def test_a_technologist_of_another_role_may_not_confirm(technologist, ct_modality, county):
    order = register(technologist, ct_modality, patient_id="XW0042")
    study = make_study(ct_modality.facility, ct_modality, study_date=date(2025, 9, 1))
    study.patient.patient_id = "XW0042"
    study.patient.save()
    orders.order_for_study(study)
    radiologist = make_user(User.Role.RADIOLOGIST, county)
    with pytest.raises(orders.OrderNotAllowed):
        orders.confirm_match(order, radiologist)
