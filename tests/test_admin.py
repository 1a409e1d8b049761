"""The Django admin: who gets in, what is registered, and what stays read-only.

Decision: administrators are Django staff (is_staff); saving an administrator in the admin
sets it, and they hold every permission on the registered models without permission rows."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import LedgerEntry, PriceItem, PriceSchedule
from consults.models import Consult
from facilities.models import AuditEvent, ExamKind, Facility, RosterShift, User
from facilities.services import audit
from tests.factories import PASSWORD, make_user

REGISTERED = [
    "facilities_facility",
    "facilities_modality",
    "facilities_applicationentity",
    "facilities_user",
    "facilities_rostershift",
    "facilities_auditevent",
    "billing_priceschedule",
    "billing_ledgerentry",
]


@pytest.fixture
def superuser_client(db) -> Client:
    User.objects.create_superuser("root", "root@example.org", PASSWORD)
    client = Client()
    assert client.login(username="root", password=PASSWORD)
    return client


@pytest.fixture
def staff_administrator_client(county: Facility) -> Client:
    make_user(User.Role.ADMINISTRATOR, county, username="admin_staff", is_staff=True)
    client = Client()
    assert client.login(username="admin_staff", password=PASSWORD)
    return client


@pytest.fixture
def records(township, ct_modality, radiologist, county):
    schedule = PriceSchedule.objects.create(code="shaanxi-2021", name="陕西 2021", effective_from=date(2021, 1, 1))
    PriceItem.objects.create(schedule=schedule, exam_kind=ExamKind.CT, level=1, price_per_part=Decimal("150.00"))
    PriceItem.objects.create(schedule=schedule, exam_kind=ExamKind.CT, level=2, price_per_part=Decimal("180.00"))
    now = timezone.now()
    consult = Consult.objects.create(
        facility=township,
        kind=ExamKind.CT,
        exam_date=date(2025, 9, 1),
        arrived_at=now - timedelta(hours=1),
        status=Consult.Status.SIGNED,
        signed_at=now,
    )
    entry = LedgerEntry.objects.create(
        consult=consult,
        facility=township,
        exam_kind=ExamKind.CT,
        exam_date=date(2025, 9, 1),
        body_parts=1,
        schedule=schedule,
        county_price=Decimal("180.00"),
        township_price=Decimal("150.00"),
        saving=Decimal("30.00"),
    )
    shift = RosterShift.objects.create(radiologist=radiologist, starts_at=now, ends_at=now + timedelta(hours=8))
    event = audit("consults.report.signed", actor=radiologist, obj=consult)
    return {
        "facilities_facility": township,
        "facilities_modality": ct_modality,
        "facilities_applicationentity": ct_modality.application_entity,
        "facilities_user": radiologist,
        "facilities_rostershift": shift,
        "facilities_auditevent": event,
        "billing_priceschedule": schedule,
        "billing_ledgerentry": entry,
    }


@pytest.mark.parametrize("client_fixture", ["superuser_client", "staff_administrator_client"])
def test_every_registered_admin_page_loads(request, client_fixture, records):
    client = request.getfixturevalue(client_fixture)
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert "云影 Yunying" in index.content.decode()
    for name in REGISTERED:
        assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
        obj = records[name]
        assert client.get(reverse(f"admin:{name}_change", args=[obj.pk])).status_code == 200, name


def test_the_modality_list_shows_ae_titles(superuser_client, records):
    page = superuser_client.get(reverse("admin:facilities_modality_changelist")).content.decode()
    assert "XUANWO_CT" in page
    page = superuser_client.get(reverse("admin:facilities_facility_changelist")).content.decode()
    assert "XUANWO_CT" in page


def test_the_user_form_has_the_role_fields(superuser_client, radiologist):
    page = superuser_client.get(reverse("admin:facilities_user_change", args=[radiologist.pk])).content.decode()
    for field in ("role", "facility", "reads_ct", "reads_dr", "is_senior"):
        assert f'name="{field}"' in page


def test_the_price_schedule_edits_its_prices_inline(superuser_client, records):
    schedule = records["billing_priceschedule"]
    page = superuser_client.get(reverse("admin:billing_priceschedule_change", args=[schedule.pk])).content.decode()
    assert 'name="items-0-price_per_part"' in page
    assert "150.00" in page


@pytest.mark.parametrize("name", ["facilities_auditevent", "billing_ledgerentry"])
def test_the_audit_trail_and_ledger_cannot_be_added_changed_or_deleted(superuser_client, records, name):
    obj = records[name]
    assert superuser_client.get(reverse(f"admin:{name}_add")).status_code == 403
    assert superuser_client.get(reverse(f"admin:{name}_delete", args=[obj.pk])).status_code == 403
    change = superuser_client.get(reverse(f"admin:{name}_change", args=[obj.pk]))
    assert 'name="_save"' not in change.content.decode()


def test_saving_an_administrator_in_the_admin_makes_them_staff(superuser_client, county):
    response = superuser_client.post(
        reverse("admin:facilities_user_add"),
        {
            "username": "new_admin",
            "password1": "a-long-enough-password-7",
            "password2": "a-long-enough-password-7",
            "role": User.Role.ADMINISTRATOR,
            "facility": county.pk,
            "display_name": "新管理员",
        },
    )
    assert response.status_code == 302
    assert User.objects.get(username="new_admin").is_staff


def test_an_administrator_cannot_make_anyone_a_superuser(staff_administrator_client, radiologist):
    page = staff_administrator_client.get(
        reverse("admin:facilities_user_change", args=[radiologist.pk])
    ).content.decode()
    assert 'name="is_superuser"' not in page
    assert 'name="role"' in page


def test_technologists_and_radiologists_are_kept_out_of_the_admin(technologist_client, radiologist_client):
    for client in (technologist_client, radiologist_client):
        response = client.get(reverse("admin:index"))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_the_admin_writes_no_audit_events_by_merely_listing(superuser_client, records):
    before = AuditEvent.objects.count()
    superuser_client.get(reverse("admin:facilities_auditevent_changelist"))
    assert AuditEvent.objects.count() == before


def test_the_admin_has_the_language_switch_and_speaks_english_after_it(superuser_client):
    page = superuser_client.get(reverse("admin:index")).content.decode()
    assert 'name="language" value="en"' in page
    assert "系统管理" in page
    superuser_client.post(reverse("set_language"), {"language": "en", "next": reverse("admin:index")})
    page = superuser_client.get(reverse("admin:index")).content.decode()
    assert "Administration" in page
    assert "Roster shift" in page


# --- Configuration changes in the audit trail -------------------------------------------

ADDRESS = "10.20.30.40"


def inline_management(prefix: str, total: int, initial: int) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def modality_form(modality, **changes) -> dict[str, object]:
    data = {
        "facility": modality.facility_id,
        "kind": modality.kind,
        "manufacturer": modality.manufacturer,
        "model_name": modality.model_name,
        "ae_title": modality.ae_title,
        "host": modality.host,
        "port": modality.port or "",
        "is_active": "on" if modality.is_active else "",
    }
    data.update(changes)
    return data


def test_adding_a_facility_with_its_modality_is_audited_with_who_when_where_and_what(staff_administrator_client):
    data = {
        "code": "TIEFO",
        "name": "铁佛寺镇卫生院",
        "short_name": "铁佛寺",
        "pinyin": "Tiefosi",
        "kind": Facility.Kind.TOWNSHIP_CENTRE,
        "level": Facility.Level.FIRST,
        "is_active": "on",
        "alert_email": "",
        **inline_management("modalities", 1, 0),
        "modalities-0-kind": ExamKind.DR,
        "modalities-0-ae_title": "TIEFO_DR",
        "modalities-0-manufacturer": "",
        "modalities-0-model_name": "",
        "modalities-0-host": "",
        "modalities-0-port": "",
        "modalities-0-is_active": "on",
    }
    before = timezone.now()
    response = staff_administrator_client.post(reverse("admin:facilities_facility_add"), data, REMOTE_ADDR=ADDRESS)
    assert response.status_code == 302
    facility = Facility.objects.get(code="TIEFO")
    event = AuditEvent.objects.get(action="facilities.facility.added")
    assert event.actor == User.objects.get(username="admin_staff")
    assert event.at >= before
    assert event.address == ADDRESS
    assert (event.object_type, event.object_id, event.facility) == ("facilities.facility", str(facility.uuid), facility)
    assert event.detail["via"] == "admin"
    assert event.detail["changes"]["name"] == "铁佛寺镇卫生院"
    assert event.detail["changes"]["level"] == Facility.Level.FIRST
    [modality] = event.detail["inlines"]
    assert modality["model"] == "facilities.modality"
    assert modality["action"] == "added"
    assert modality["changes"]["ae_title"] == "TIEFO_DR"


def test_changing_a_modality_records_each_changed_fields_value_before_and_after(
    staff_administrator_client, ct_modality, other_township
):
    url = reverse("admin:facilities_modality_change", args=[ct_modality.pk])
    data = modality_form(ct_modality, ae_title="PINGLIANG_CT", port="11112", facility=other_township.pk)
    assert staff_administrator_client.post(url, data, REMOTE_ADDR=ADDRESS).status_code == 302
    event = AuditEvent.objects.get(action="facilities.modality.changed")
    assert event.detail["changes"] == {
        "facility": ["漩涡镇中心卫生院", "平梁镇卫生院"],
        "ae_title": ["XUANWO_CT", "PINGLIANG_CT"],
        "port": [None, 11112],
    }
    assert event.facility == other_township
    assert event.address == ADDRESS


def test_saving_a_form_without_a_change_still_records_who_saved_it(staff_administrator_client, ct_modality):
    url = reverse("admin:facilities_modality_change", args=[ct_modality.pk])
    assert staff_administrator_client.post(url, modality_form(ct_modality)).status_code == 302
    assert AuditEvent.objects.get(action="facilities.modality.changed").detail["changes"] == {}


def test_a_price_changed_in_its_schedule_is_recorded_with_the_inline_row(staff_administrator_client, records):
    schedule = records["billing_priceschedule"]
    first, second = schedule.items.order_by("level")
    data = {
        "code": schedule.code,
        "name": schedule.name,
        "effective_from": "2021-01-01",
        "effective_to": "",
        **inline_management("items", 2, 2),
    }
    for index, item in enumerate((first, second)):
        data.update(
            {
                f"items-{index}-id": item.pk,
                f"items-{index}-schedule": schedule.pk,
                f"items-{index}-exam_kind": item.exam_kind,
                f"items-{index}-level": item.level,
                f"items-{index}-item_code": "",
                f"items-{index}-item_name": "",
                f"items-{index}-price_per_part": str(item.price_per_part),
            }
        )
    data["items-0-price_per_part"] = "160.00"
    url = reverse("admin:billing_priceschedule_change", args=[schedule.pk])
    assert staff_administrator_client.post(url, data).status_code == 302
    event = AuditEvent.objects.get(action="billing.priceschedule.changed")
    assert event.object_type == "billing.priceschedule"
    assert event.detail["changes"] == {}
    assert event.detail["inlines"] == [
        {
            "model": "billing.priceitem",
            "object": str(PriceItem.objects.get(pk=first.pk)),
            "action": "changed",
            "changes": {"price_per_part": ["150.00", "160.00"]},
        }
    ]


def test_deleting_a_roster_shift_is_recorded_before_it_goes(staff_administrator_client, records):
    shift = records["facilities_rostershift"]
    url = reverse("admin:facilities_rostershift_delete", args=[shift.pk])
    assert staff_administrator_client.post(url, {"post": "yes"}, REMOTE_ADDR=ADDRESS).status_code == 302
    assert not RosterShift.objects.filter(pk=shift.pk).exists()
    event = AuditEvent.objects.get(action="facilities.rostershift.deleted")
    assert event.object_id == str(shift.pk)
    assert event.detail["object"] == str(shift)
    assert event.address == ADDRESS


def test_deleting_several_modalities_at_once_records_each(staff_administrator_client, township):
    from tests.factories import make_modality

    doomed = [make_modality(township, ExamKind.CT, "OLD_CT"), make_modality(township, ExamKind.DR, "OLD_DR")]
    response = staff_administrator_client.post(
        reverse("admin:facilities_modality_changelist"),
        {"action": "delete_selected", "_selected_action": [m.pk for m in doomed], "post": "yes"},
    )
    assert response.status_code == 302
    events = AuditEvent.objects.filter(action="facilities.modality.deleted")
    assert sorted(e.detail["object"] for e in events) == sorted(str(m) for m in doomed)
    assert {e.facility for e in events} == {township}


def test_a_new_user_is_recorded_with_role_and_facility_and_never_the_password(staff_administrator_client, county):
    password = "a-long-enough-password-7"
    response = staff_administrator_client.post(
        reverse("admin:facilities_user_add"),
        {
            "username": "dr_zhou",
            "password1": password,
            "password2": password,
            "role": User.Role.RADIOLOGIST,
            "facility": county.pk,
            "display_name": "周医生",
        },
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="facilities.user.added")
    assert event.object_id == str(User.objects.get(username="dr_zhou").uuid)
    assert event.detail["changes"]["role"] == User.Role.RADIOLOGIST
    assert event.detail["changes"]["facility"] == county.name
    assert event.detail["changes"]["password"] == "******"
    assert password not in json.dumps(event.detail, ensure_ascii=False)


def test_setting_a_users_password_in_the_admin_is_recorded_but_not_the_password(
    staff_administrator_client, technologist
):
    password = "another-good-password-8"
    response = staff_administrator_client.post(
        reverse("admin:auth_user_password_change", args=[technologist.pk]),
        {"password1": password, "password2": password},
        REMOTE_ADDR=ADDRESS,
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="facilities.user.changed")
    assert event.object_id == str(technologist.uuid)
    assert event.detail["changes"] == {"password": "******"}
    assert password not in json.dumps(event.detail, ensure_ascii=False)


def test_a_password_the_validators_refuse_is_refused_in_the_admin(staff_administrator_client, technologist):
    url = reverse("admin:auth_user_password_change", args=[technologist.pk])
    for weak in ("short-1", "1234567890123", "password123"):
        response = staff_administrator_client.post(url, {"password1": weak, "password2": weak})
        assert response.status_code == 200, weak
    technologist.refresh_from_db()
    assert technologist.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="facilities.user.changed").exists()


def test_every_admin_that_can_change_something_writes_it_to_the_audit_trail():
    from django.contrib import admin

    from facilities.admin import AuditedAdmin, ReadOnlyAdmin

    unaudited = [
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not isinstance(model_admin, AuditedAdmin | ReadOnlyAdmin)
    ]
    assert unaudited == []


def test_groups_and_api_tokens_are_not_administered_in_the_admin():
    from django.contrib import admin
    from django.contrib.auth.models import Group
    from knox.models import AuthToken

    from facilities.models import ApiToken

    assert not admin.site.is_registered(Group)
    assert not admin.site.is_registered(ApiToken)
    assert not admin.site.is_registered(AuthToken)


def test_every_field_an_admin_page_shows_has_a_chinese_name():
    from django.contrib import admin

    unnamed = [
        f"{model._meta.label}.{field.name}"
        for model in admin.site._registry
        for field in model._meta.concrete_fields
        if getattr(field, "_verbose_name", None) is None and not field.primary_key
    ]
    assert unnamed == []


def test_the_ledger_admin_speaks_chinese_in_its_headers_and_filters(superuser_client, records):
    page = superuser_client.get(reverse("admin:billing_ledgerentry_changelist")).content.decode()

    for header in ("检查日期", "申请机构", "检查类型", "部位数", "县医院价格（元）", "乡镇价格（元）", "节省（元）"):
        assert header in page, header
    filters = " ".join(page.split())
    assert "以 检查类型" in filters and "以 申请机构" in filters
    assert "exam kind" not in page.lower() and "county price" not in page.lower()


def test_the_audit_admin_names_its_actions(superuser_client, records):
    page = superuser_client.get(reverse("admin:facilities_auditevent_changelist")).content.decode()

    assert "签发报告" in page
    assert "以 操作" in " ".join(page.split())


def test_the_admin_has_the_favicon(superuser_client):
    page = superuser_client.get(reverse("admin:index")).content.decode()

    assert 'rel="icon" href="/static/img/favicon.svg"' in page


def test_the_audit_admin_names_each_person_with_their_username(superuser_client, records):
    page = superuser_client.get(reverse("admin:facilities_auditevent_changelist")).content.decode()

    assert "李医生（dr_li）" in page


def test_the_roster_lists_radiologists_by_pinyin_in_its_form_and_filter(staff_administrator_client, county):
    # Usernames in another order, and code points (张 < 李 < 王) in a third.
    for username, name in [("a_wang", "王五"), ("b_zhang", "张三"), ("c_li", "李四")]:
        make_user(User.Role.RADIOLOGIST, county, username=username, display_name=name)
    make_user(User.Role.TECHNOLOGIST, county, username="a_tech", display_name="艾技师")

    form = staff_administrator_client.get(reverse("admin:facilities_rostershift_add")).content.decode()
    select = form[form.index('name="radiologist"') : form.index("</select>", form.index('name="radiologist"'))]
    options = [text for text in (part.split(">", 1)[1] for part in select.split("<option")[2:])]
    assert [text.split("<", 1)[0] for text in options] == ["李四", "王五", "张三"]  # no technologist

    listing = staff_administrator_client.get(reverse("admin:facilities_rostershift_changelist")).content.decode()
    assert listing.index("李四") < listing.index("王五") < listing.index("张三")
    assert "艾技师" not in listing


def test_the_roster_opens_on_its_latest_shifts(staff_administrator_client, radiologist):
    now = timezone.now()
    old = RosterShift.objects.create(radiologist=radiologist, starts_at=now - timedelta(days=900), ends_at=now)
    new = RosterShift.objects.create(radiologist=radiologist, starts_at=now, ends_at=now + timedelta(hours=8))

    listing = staff_administrator_client.get(reverse("admin:facilities_rostershift_changelist"))
    shown = list(listing.context["cl"].result_list)
    assert shown.index(new) < shown.index(old)


def test_the_admin_greets_a_person_by_their_name(superuser_client, county):
    make_user(User.Role.ADMINISTRATOR, county, username="admin_li", display_name="李管理员", is_staff=True)
    client = Client()
    assert client.login(username="admin_li", password=PASSWORD)
    page = client.get(reverse("admin:index")).content.decode()
    assert "<strong>李管理员</strong>" in page
