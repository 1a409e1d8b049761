"""The administrator's search of the audit trail: who may open it, what each filter finds,
newest first, a page at a time, and no way to change a record from it."""

from __future__ import annotations

import ast
import importlib
import re
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from facilities import services
from facilities.auditlabels import ACTIONS, ADMIN_VERBS, DETAIL_KEYS
from facilities.models import AuditEvent
from facilities.views import AUDIT_PAGE_SIZE
from tests.factories import PASSWORD
from tests.test_i18n import switch_to_english

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


def test_each_event_names_the_person_with_the_username_they_signed_in_with(administrator_client, trail):
    Client().post(reverse("login"), {"username": "nobody_here", "password": "wrong-password"})
    page = administrator_client.get(URL).content.decode()

    assert '<span class="person">漩涡技师</span> <span class="username muted">tech_xuanwo</span>' in page
    assert '<span class="person">李医生</span> <span class="username muted">dr_li</span>' in page
    # A name tried at login that is nobody's is shown as typed.
    assert '<td class="actor"><span class="username">nobody_here</span></td>' in page


def test_a_reader_named_in_the_details_is_shown_by_name_too(administrator_client, township, radiologist):
    services.audit("consults.consult.assigned", facility=township, radiologist="dr_li", method="roster")

    assert "李医生（dr_li）" in administrator_client.get(URL).content.decode()
    switch_to_english(administrator_client)
    assert "李医生 (dr_li)" in administrator_client.get(URL).content.decode()


def test_the_user_filter_finds_people_by_their_name_too(administrator_client, trail):
    events = shown(administrator_client.get(URL, {"user": "李医", "since": "2026-03-01"}))
    assert events == [trail["other"], trail["signed"]]


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
    # A page that is not a number from 1 is the first; one past the end, the last.
    for asked in ("abc", "0", "-3", ""):
        assert shown(administrator_client.get(URL, {"action": "cloudpacs.study", "page": asked})) == shown(first)
    assert shown(administrator_client.get(URL, {"action": "cloudpacs.study", "page": 99})) == shown(second)


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
    assert f'<span class="part">用户</span> · <span class="part">{technologist}</span>' in page
    assert f'<span class="part">医疗机构</span> · <span class="part">{township.short_name}</span>' in page
    # An object that no longer exists links to its history in the trail.
    assert 'href="/audit/?object_id=gone"' in page
    assert "somebody.new.code" in page  # a code without a name is shown as written
    assert "途径" in page and "已签发" in page and "是" in page
    assert "facilities.user " not in page


def test_the_time_stays_on_one_line_and_the_table_has_fixed_columns(administrator_client, trail):
    page = administrator_client.get(URL).content.decode()

    assert '<td class="when"><time datetime="2026-03-03T09:00:00+08:00">2026-03-03 09:00:00</time></td>' in page
    assert 'class="data audit"' in page


# Where the apps write the audit trail; the tests and benchmarks write codes of their own.
APP_SOURCES = ("facilities", "cloudpacs", "dicomnode", "consults", "billing")
# What audit() takes besides the action and the detail.
NOT_DETAIL = {"actor", "request", "obj", "object_type", "object_id", "facility"}


def audit_calls() -> list[tuple[str, ast.Call, ModuleType]]:
    """Every call of audit(...) in the apps' code, with its module (to read a constant)."""
    calls = []
    for app in APP_SOURCES:
        for path in sorted((Path(settings.BASE_DIR) / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            module = None
            for node in ast.walk(tree):
                name = getattr(node, "func", None)
                if isinstance(node, ast.Call) and getattr(name, "id", getattr(name, "attr", None)) == "audit":
                    if module is None:
                        relative = path.relative_to(settings.BASE_DIR).with_suffix("")
                        module = importlib.import_module(".".join(relative.parts))
                    calls.append((f"{path.name}:{node.lineno}", node, module))
    return calls


def test_every_action_and_detail_the_apps_write_has_a_name_on_the_audit_page():
    """The walk through the administrator's day found cloudpacs.orders.viewed and
    matched_by: accession on the Chinese page: every code written is named."""
    calls = audit_calls()
    assert len(calls) > 50
    unnamed = []
    for where, call, module in calls:
        first = call.args[0]
        if isinstance(first, ast.JoinedStr):
            # consults.{kind}.email_queued: a named action for each value the gap takes.
            pattern = "".join(re.escape(p.value) if isinstance(p, ast.Constant) else r"[a-z_]+" for p in first.values)
            last = first.values[-1]
            admin_verb = isinstance(last, ast.Constant) and last.value.rpartition(".")[2] in ADMIN_VERBS
            if not admin_verb and not any(re.fullmatch(pattern, code) for code in ACTIONS):
                unnamed.append(f"{where} {ast.unparse(first)}")
        else:
            code = eval(ast.unparse(first), vars(module))  # noqa: S307 -- a constant of the module
            if code not in ACTIONS and code.rpartition(".")[2] not in ADMIN_VERBS:
                unnamed.append(f"{where} {code}")
        unnamed += [
            f"{where} detail {kw.arg}"
            for kw in call.keywords
            if kw.arg is not None and kw.arg not in NOT_DETAIL and kw.arg not in DETAIL_KEYS
        ]
    assert unnamed == []


def test_codes_written_as_values_are_named_in_either_language(administrator_client, township, technologist):
    services.audit("cloudpacs.order.linked", actor=technologist, facility=township, matched_by="accession")
    services.audit("cloudpacs.study.retrieved", actor=technologist, facility=township, via="series-metadata")
    services.audit("consults.consult.assigned", facility=township, method="roster", radiologist="dr_li")

    page = administrator_client.get(URL).content.decode()

    assert "检查关联到登记" in page and "关联方式：</span>按检查号" in page
    assert "WADO-RS 序列元数据" in page and "排班分配" in page
    for code in ("matched_by", "accession<", "series-metadata<", "roster<"):
        assert code not in page
    administrator_client.post(reverse("set_language"), {"language": "en", "next": URL})
    english = administrator_client.get(URL).content.decode()
    assert "Study linked to its registration" in english and "By accession number" in english
    assert "WADO-RS series metadata" in english and "Assigned by the roster" in english


def test_times_edits_and_the_remaining_codes_are_shown_as_a_reader_reads_them(
    administrator_client, township, technologist
):
    """Left as written until now: an escalation's reason (off_duty), a delivery's channel
    (pdf), a monthly report's trigger (schedule), times in UTC ISO form, an admin edit's
    fields by their code names with True/False and choice codes, and an export's table."""
    services.audit("consults.consult.escalated", facility=township, reason="off_duty", reassigned=True)
    services.audit("consults.report.delivered", actor=technologist, facility=township, channel="pdf")
    services.audit("billing.monthly_report.generated", month="2025-09", trigger="schedule")
    services.audit("consults.consult.flagged", facility=township, due_at="2025-09-01T02:30:00+00:00")
    services.audit(
        "facilities.user.changed",
        obj=technologist,
        via="admin",
        changes={"role": ["technologist", "radiologist"], "reads_ct": [False, True], "display_name": ["", "漩涡技师"]},
        inlines=[{"model": "facilities.modality", "object": "XUANWO_DR", "action": "added", "changes": {"port": 104}}],
    )
    services.audit("billing.export.downloaded", object_type="billing.export", table="savings-township", format="xlsx")
    services.audit("consults.report.viewed", facility=township, signed=False, page="reading")
    services.audit("consults.consult.created", facility=township, kind="CT", accession_number="", instances=5)

    page = administrator_client.get(URL).content.decode()

    assert "原因：</span>诊断医师下班" in page
    assert "方式：</span>打印或下载 PDF" in page
    assert "生成方式：</span>定时生成" in page
    assert "诊断时限：</span>2025-09-01 10:30" in page  # Beijing time
    assert "角色：技师 → 诊断医师；可阅 CT：否 → 是；姓名：— → 漩涡技师" in page
    assert "新增检查设备 XUANWO_DR（端口：104）" in page
    assert "报表：</span>节省费用（按乡镇）" in page and "Excel（XLSX）" in page
    assert "页面：</span>阅片与报告" in page
    assert "检查号：</span>—" in page  # none, not an empty value
    for code in (
        "off_duty",
        ">pdf<",
        "schedule<",
        "T02:30:00",
        "technologist →",
        "False",
        '"role"',
        "savings-township",
        ">reading<",
    ):
        assert code not in page, code

    administrator_client.post(reverse("set_language"), {"language": "en", "next": URL})
    english = administrator_client.get(URL).content.decode()
    assert "off duty" in english.lower()
    assert "2025-09-01 10:30" in english and "Excel (XLSX)" in english
    assert "Role: Technologist → Radiologist; Reads CT: no → yes" in english


def test_an_order_is_named_without_its_patient_and_a_list_without_a_dangling_dot(
    administrator_client, township, technologist, ct_modality
):
    """检查申请 · Y2612070006 陈兰芳 DR named the patient on the administrator's page (its
    own name holds the patient's), and viewing the list of orders read "检查申请 ·"."""
    from cloudpacs import orders
    from cloudpacs.models import BodyPart

    orders.register_order(
        technologist,
        modality=ct_modality,
        patient_id="XW0001",
        patient_name="陈兰芳",
        body_parts=[BodyPart.objects.get(code="CHEST")],
        scheduled_at=timezone.make_aware(datetime(2025, 9, 1, 9, 30)),
    )
    services.audit("cloudpacs.orders.viewed", actor=technologist, object_type="cloudpacs.order", via="api", count=3)

    page = administrator_client.get(URL).content.decode()

    assert "陈兰芳" not in page
    part = r'<span class="part">{}</span>'
    assert re.search(" · ".join([part.format("检查申请"), part.format(r"\w+"), part.format("CT")]) + "</a>", page)
    assert '<td class="object"><span class="part">检查申请</span></td>' in page
    assert not re.search(r" · (</a>)?</td>", page)
