"""The Django admin: who gets in, what is registered, and what stays read-only.

Decision: administrators are Django staff (is_staff); saving an administrator in the admin
sets it, and they hold every permission on the registered models without permission rows."""

from __future__ import annotations

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
