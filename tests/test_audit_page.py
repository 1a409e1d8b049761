"""The administrator's search of the audit trail: who may open it, what each filter finds,
newest first, a page at a time, and no way to change a record from it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from facilities import services
from facilities.models import AuditEvent
from facilities.views import AUDIT_PAGE_SIZE
from tests.factories import PASSWORD

URL = "/audit/"


def shown(response) -> list[AuditEvent]:
    return list(response.context["page"].object_list)


@pytest.fixture
def trail(township, other_township, technologist, radiologist):
    """Three events on three days, each by someone else, about something else."""
    local = timezone.get_current_timezone()
    events = {
        "sent": AuditEvent.objects.create(
            at=datetime(2026, 3, 1, 9, 0, tzinfo=local),
            actor=technologist,
            actor_name="tech_xuanwo",
            action="consults.consult.created",
            object_type="consults.consult",
            object_id="1.2.826.0.1.3680043.8.498.1",
            facility=township,
        ),
        "signed": AuditEvent.objects.create(
            at=datetime(2026, 3, 2, 9, 0, tzinfo=local),
            actor=radiologist,
            actor_name="dr_li",
            action="consults.report.signed",
            object_type="consults.report",
            object_id="1.2.826.0.1.3680043.8.498.2",
            facility=township,
        ),
        "other": AuditEvent.objects.create(
            at=datetime(2026, 3, 3, 9, 0, tzinfo=local),
            actor=radiologist,
            actor_name="dr_li",
            action="billing.saving.recorded",
            object_id="1.2.826.0.1.3680043.8.498.3",
            facility=other_township,
        ),
    }
    return events


def test_the_administrator_opens_the_page_and_sees_it_in_the_menu(administrator_client):
    response = administrator_client.get(URL)
    assert response.status_code == 200
    home = administrator_client.get(reverse("billing:dashboard"))
    assert f'href="{URL}"' in home.content.decode()


@pytest.mark.parametrize("persona", ["technologist_client", "radiologist_client", "outsider_client"])
def test_other_roles_are_refused(persona, request):
    client = request.getfixturevalue(persona)
    assert client.get(URL).status_code == 403


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_lists_newest_first(administrator_client, trail):
    events = shown(administrator_client.get(URL, {"since": "2026-03-01", "until": "2026-03-03"}))
    assert events == [trail["other"], trail["signed"], trail["sent"]]


def test_it_filters_by_user(administrator_client, trail):
    assert shown(administrator_client.get(URL, {"user": "tech_xuanwo", "since": "2026-03-01"})) == [trail["sent"]]


def test_the_user_filter_finds_failed_logins_by_the_name_tried(administrator_client, technologist):
    Client().post(reverse("login"), {"username": "tech_xuanwo", "password": "wrong-password"})
    response = administrator_client.get(URL, {"user": "tech_xuanwo", "action": "facilities.login.failed"})
    assert len(shown(response)) == 1
    assert "tech_xuanwo" in response.content.decode()


def test_it_filters_by_action_prefix(administrator_client, trail):
    events = shown(administrator_client.get(URL, {"action": "consults."}))
    assert events == [trail["signed"], trail["sent"]]


def test_it_filters_by_object_id(administrator_client, trail):
    events = shown(administrator_client.get(URL, {"object_id": "1.2.826.0.1.3680043.8.498.2"}))
    assert events == [trail["signed"]]


def test_it_filters_by_facility_named_by_its_uuid(administrator_client, trail, other_township):
    assert shown(administrator_client.get(URL, {"facility": str(other_township.uuid)})) == [trail["other"]]


def test_it_filters_by_a_date_range_with_both_days_included(administrator_client, trail):
    events = shown(administrator_client.get(URL, {"since": "2026-03-02", "until": "2026-03-02"}))
    assert events == [trail["signed"]]


def test_a_malformed_date_shows_nothing(administrator_client, trail):
    response = administrator_client.get(URL, {"since": "not-a-date"})
    assert response.status_code == 200
    assert shown(response) == []


def test_it_shows_one_page_at_a_time_and_keeps_the_filters_in_the_links(administrator_client):
    start = timezone.now() - timedelta(days=1)
    for number in range(AUDIT_PAGE_SIZE + 5):
        AuditEvent.objects.create(at=start + timedelta(seconds=number), action="cloudpacs.study.viewed")
    first = administrator_client.get(URL, {"action": "cloudpacs.study"})
    assert len(shown(first)) == AUDIT_PAGE_SIZE
    assert "action=cloudpacs.study&amp;page=2" in first.content.decode()
    second = administrator_client.get(URL, {"action": "cloudpacs.study", "page": 2})
    assert len(shown(second)) == 5
    assert shown(second)[-1].at == start


def test_the_page_changes_nothing(administrator_client, trail):
    before = AuditEvent.objects.count()
    response = administrator_client.post(URL, {"action": "consults."})
    assert response.status_code == 405
    assert AuditEvent.objects.count() == before
    page = administrator_client.get(URL).content.decode()
    # The only forms that post are the header's language switch and logout.
    assert page.count('method="post"') == 2
    assert "delete" not in page.lower()


def test_search_audit_combines_criteria(trail, township):
    events = services.search_audit(user="dr_li", action="consults", facility=township)
    assert list(events) == [trail["signed"]]


def test_the_address_is_the_clients_even_behind_a_trusted_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.2", "10.0.0.3"]
    factory = RequestFactory()
    proxied = factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9, 10.0.0.3")
    assert services.client_address(proxied) == "203.0.113.9"
    direct = factory.get("/", REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert services.client_address(direct) == "198.51.100.7"
    garbage = factory.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-address")
    assert services.client_address(garbage) == "10.0.0.2"


def test_without_trusted_proxies_a_forwarded_header_is_ignored(client, technologist):
    client.post(
        "/accounts/login/",
        {"username": technologist.username, "password": PASSWORD},
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
    )
    assert AuditEvent.objects.get(action="facilities.login.succeeded").address == "10.0.0.2"


def test_actions_objects_and_details_are_shown_in_chinese_with_links(administrator_client, township, technologist):
    services.audit(services.LOGIN_SUCCEEDED, actor=technologist, obj=technologist)
    services.audit("facilities.facility.changed", actor=technologist, obj=township, via="admin")
    services.audit("consults.report.viewed", actor=technologist, object_type="consults.consult", object_id="gone")
    services.audit("somebody.new.code", actor=technologist, signed=True)

    page = administrator_client.get(URL).content.decode()

    assert "登录成功" in page and ">facilities.login.succeeded<" not in page
    assert "修改医疗机构" in page  # an admin change: the verb and the model's Chinese name
    assert f'href="{reverse("admin:facilities_user_change", args=[technologist.pk])}"' in page
    assert f"用户 · {technologist}" in page
    assert f"医疗机构 · {township.short_name}" in page
    # An object that no longer exists links to its history in the trail.
    assert 'href="/audit/?object_id=gone"' in page
    assert "somebody.new.code" in page  # a code without a name is shown as written
    assert "途径" in page and "已签发" in page and "是" in page
    assert "facilities.user " not in page


def test_the_time_stays_on_one_line_and_the_table_has_fixed_columns(administrator_client, trail):
    page = administrator_client.get(URL).content.decode()

    assert '<td class="when"><time datetime="2026-03-03T09:00:00+08:00">2026-03-03 09:00:00</time></td>' in page
    assert 'class="data audit"' in page
