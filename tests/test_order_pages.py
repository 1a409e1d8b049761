"""The township's register of exams (检查登记) and its JSON API: technologists of the
township only, an outsider gets 404, every change through a form or serializer, audited."""

from __future__ import annotations

import json
from datetime import date

import pytest
from django.test import Client
from django.urls import reverse

from cloudpacs import orders
from cloudpacs.models import BodyPart, Order
from dicomnode.worklist import order_dataset
from facilities.models import ApiToken, AuditEvent
from tests.dicomweb_support import token_for
from tests.factories import make_study

pytestmark = pytest.mark.django_db


def form_data(modality, **extra):
    data = {
        "patient_name": "王五",
        "patient_id": "XW0100",
        "patient_sex": "F",
        "patient_birth_date": "1958-03-02",
        "modality": str(modality.pk),
        "body_parts": [str(BodyPart.objects.get(code="CHEST").pk), str(BodyPart.objects.get(code="LSPINE").pk)],
        "priority": "urgent",
        "clinical_history": "咳嗽两周",
        "question": "肺部感染？",
        "scheduled_at": "2025-09-01T10:30",
    }
    data.update(extra)
    return data


def test_a_technologist_registers_an_exam_and_gets_an_accession_number(technologist_client, ct_modality):
    response = technologist_client.post(reverse("orders:list"), form_data(ct_modality))
    assert response.status_code == 302
    order = Order.objects.get()
    assert order.patient_name == "王五" and order.priority == "urgent" and order.body_parts.count() == 2
    page = technologist_client.get(reverse("orders:list")).content.decode()
    assert order.accession_number in page and "王五" in page
    assert AuditEvent.objects.filter(action="cloudpacs.order.registered").exists()
    assert AuditEvent.objects.filter(action="cloudpacs.orders.viewed").exists()


def test_a_part_that_does_not_apply_is_shown_as_an_error_and_nothing_is_registered(technologist_client, ct_modality):
    hand = str(BodyPart.objects.get(code="HAND").pk)
    response = technologist_client.post(reverse("orders:list"), form_data(ct_modality, body_parts=[hand]))
    assert response.status_code == 400
    assert "不适用" in response.content.decode()
    assert not Order.objects.exists()


def test_a_missing_name_is_a_form_error(technologist_client, ct_modality):
    response = technologist_client.post(reverse("orders:list"), form_data(ct_modality, patient_name=""))
    assert response.status_code == 400 and not Order.objects.exists()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Wang Wu", "WANG^WU"),
        ("wang^wu", "WANG^WU"),
        ("Ouyang Xiao Ming", "OUYANG^XIAOMING"),
        ("Lü Bin", "LV^BIN"),
        ("", ""),
    ],
)
def test_the_pinyin_is_kept_family_name_first_as_a_person_names_alphabetic_group(
    technologist_client, ct_modality, typed, stored
):
    response = technologist_client.post(reverse("orders:list"), form_data(ct_modality, patient_name_pinyin=typed))
    assert response.status_code == 302
    order = Order.objects.get()
    assert order.patient_name_pinyin == stored
    assert order_dataset(order).PatientName == (f"{stored}=王五" if stored else "王五")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("patient_name_pinyin", "Wang=Wu"),
        ("patient_name_pinyin", "王五"),
        ("patient_name_pinyin", "Wang\\Wu"),
        ("patient_name_pinyin", "^Wu"),
        ("patient_name", "王五=WANG^WU"),
        ("patient_name", "王五\\赵六"),
    ],
)
def test_a_name_that_would_break_the_person_name_is_a_clear_error_and_nothing_is_registered(
    technologist_client, technologist, ct_modality, field, value
):
    response = technologist_client.post(reverse("orders:list"), form_data(ct_modality, **{field: value}))
    assert response.status_code == 400
    expected = "姓名拼音只能包含字母" if field == "patient_name_pinyin" else "患者姓名不能包含"
    assert expected in response.content.decode()
    refused = api(technologist).post(
        reverse("orders:api-list"), json.dumps(api_body(**{field: value})), content_type="application/json"
    )
    assert refused.status_code == 400
    assert not Order.objects.exists()


def test_another_townships_console_cannot_be_chosen(outsider_client, ct_modality):
    response = outsider_client.post(reverse("orders:list"), form_data(ct_modality))
    assert response.status_code == 400 and not Order.objects.exists()


def test_the_register_is_for_technologists(radiologist_client, client, db):
    assert radiologist_client.get(reverse("orders:list")).status_code == 403
    assert client.get(reverse("orders:list")).status_code == 302


def register(technologist, modality, **fields):
    from datetime import datetime

    from django.utils import timezone

    fields.setdefault("patient_id", "XW0001")
    fields.setdefault("patient_name", "张三")
    return orders.register_order(
        technologist,
        modality=modality,
        body_parts=[BodyPart.objects.get(code="CHEST")],
        scheduled_at=timezone.make_aware(datetime(2025, 9, 1, 9, 0)),
        **fields,
    )


def test_cancelling_is_a_post_and_another_township_gets_404(
    technologist, technologist_client, outsider_client, ct_modality
):
    order = register(technologist, ct_modality)
    url = reverse("orders:cancel", args=[order.uuid])
    assert technologist_client.get(url).status_code == 405
    assert outsider_client.post(url).status_code == 404
    assert technologist_client.post(url).status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


def test_a_guessed_link_is_confirmed_from_the_register(technologist, technologist_client, ct_modality):
    order = register(technologist, ct_modality, patient_id="XW0042")
    study = make_study(ct_modality.facility, ct_modality, study_date=date(2025, 9, 1))
    study.patient.patient_id = "XW0042"
    study.patient.save()
    orders.order_for_study(study)
    page = technologist_client.get(reverse("orders:list")).content.decode()
    assert "orders-to-confirm" in page
    facility_page = technologist_client.get(reverse("consults:facility", args=[ct_modality.facility.uuid]))
    assert "关联待确认" in facility_page.content.decode()
    assert technologist_client.post(reverse("orders:confirm", args=[order.uuid])).status_code == 302
    order.refresh_from_db()
    assert not order.needs_confirmation


# --- The JSON API ----------------------------------------------------------------------------


def api(user, scope: str = ApiToken.Scope.WRITE) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {token_for(user, scope)}")


def api_body(**extra):
    body = {
        "modality": "XUANWO_CT",
        "patient_id": "XW0200",
        "patient_name": "赵六",
        "patient_sex": "M",
        "body_parts": ["CHEST", "abdomen"],
        "priority": "emergency",
        "clinical_history": "腹痛",
        "scheduled_at": "2025-09-01T15:00:00+08:00",
    }
    body.update(extra)
    return body


def test_a_his_registers_an_exam_through_the_api(technologist, ct_modality):
    client = api(technologist)
    response = client.post(reverse("orders:api-list"), json.dumps(api_body()), content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["accession_number"].startswith("Y") and body["body_parts"] == ["CHEST", "ABDOMEN"]
    assert body["status"] == "scheduled" and body["modality"] == "XUANWO_CT"
    listed = client.get(reverse("orders:api-list"), {"status": "scheduled"}).json()
    assert [row["uuid"] for row in listed] == [body["uuid"]]
    detail = client.get(reverse("orders:api-detail", args=[body["uuid"]]))
    assert detail.json()["patient_name"] == "赵六"
    cancelled = client.post(reverse("orders:api-cancel", args=[body["uuid"]]))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(reverse("orders:api-cancel", args=[body["uuid"]]))
    assert again.status_code == 409


def test_a_read_only_token_lists_orders_but_cannot_register_or_cancel(technologist, ct_modality):
    registered = api(technologist).post(
        reverse("orders:api-list"), json.dumps(api_body()), content_type="application/json"
    )
    reader = api(technologist, ApiToken.Scope.READ)
    assert reader.get(reverse("orders:api-list")).status_code == 200
    refused = reader.post(reverse("orders:api-list"), json.dumps(api_body()), content_type="application/json")
    assert refused.status_code == 403
    assert "may only read" in refused.json()["detail"]
    assert reader.post(reverse("orders:api-cancel", args=[registered.json()["uuid"]])).status_code == 403
    assert Order.objects.count() == 1


def test_the_api_refuses_bad_input_with_a_clear_400(technologist, ct_modality):
    client = api(technologist)
    for bad in [
        api_body(body_parts=["ELBOWISH"]),
        api_body(body_parts=[]),
        api_body(modality="PINGLIANG_CT"),
        api_body(body_parts=["HAND"]),
        api_body(scheduled_at="not a time"),
        api_body(priority="whenever"),
    ]:
        response = client.post(reverse("orders:api-list"), json.dumps(bad), content_type="application/json")
        assert response.status_code == 400, (bad, response.content)
    assert not Order.objects.exists()


def test_the_api_is_scoped_to_the_accounts_township(technologist, outsider, ct_modality):
    order = register(technologist, ct_modality)
    client = api(outsider)
    assert client.get(reverse("orders:api-list")).json() == []
    assert client.get(reverse("orders:api-detail", args=[order.uuid])).status_code == 404
    assert client.post(reverse("orders:api-cancel", args=[order.uuid])).status_code == 404
    response = client.post(reverse("orders:api-list"), json.dumps(api_body()), content_type="application/json")
    assert response.status_code == 400  # XUANWO_CT is not a console of the outsider's township


def test_the_api_is_for_technologist_accounts(radiologist, db):
    assert api(radiologist).get(reverse("orders:api-list")).status_code == 403
    assert Client().get(reverse("orders:api-list")).status_code in (401, 403)


def test_the_vocabulary_is_served_for_a_kind(technologist):
    parts = api(technologist).get(reverse("orders:api-body-parts"), {"kind": "DR"}).json()
    codes = [part["code"] for part in parts]
    assert "HAND" in codes and "NECK" not in codes
    chest = next(part for part in parts if part["code"] == "CHEST")
    assert chest["name_zh"] == "胸部" and "THORAX" in chest["dicom_values"]


def test_the_orders_api_is_in_the_openapi_schema(technologist):
    schema = api(technologist).get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"/api/orders/", "/api/orders/{order_uuid}/", "/api/orders/{order_uuid}/cancel/", "/api/body-parts/"} <= set(
        schema["paths"]
    )


def test_the_study_page_shows_the_order_it_was_linked_to(
    technologist, technologist_client, radiologist_client, ct_modality
):
    order = register(technologist, ct_modality, patient_id="XW0042")
    study = make_study(ct_modality.facility, ct_modality, study_date=date(2025, 9, 1))
    study.patient.patient_id = "XW0042"
    study.patient.save()
    from consults.services import open_consult_for_study

    open_consult_for_study(study)
    for client in (technologist_client, radiologist_client):
        page = client.get(reverse("cloudpacs:study", args=[study.study_uid])).content.decode()
        assert order.accession_number in page and "按患者 ID 与日期" in page and "待确认" in page
