"""The reading pages under /reading/: the reporting page, the worklist's claim actions, the
report form's three buttons, addenda, critical findings and their acknowledgement, the PDF,
and scoping: a technologist of another township gets 404 on every page of a consult."""

from __future__ import annotations

import io
import socket
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from consults import delivery, workflow
from consults.models import Consult, CriticalFinding, ReportDelivery, ReportTemplate
from facilities.models import AuditEvent, User
from tests.conftest import login
from tests.factories import make_consult, make_study, make_user


@pytest.fixture
def consult(township, ct_modality) -> Consult:
    study = make_study(township, ct_modality, description="胸部 CT 平扫")
    return make_consult(township, study, body_part_names="胸部", clinical_history="咳嗽两周，发热 3 天")


@pytest.fixture
def other_radiologist(county) -> User:
    return make_user(User.Role.RADIOLOGIST, county, username="dr_wang", display_name="王医生")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page(consult: Consult) -> str:
    return reverse("reading:page", args=[consult.uuid])


def url(name: str, consult: Consult) -> str:
    return reverse(f"reading:{name}", args=[consult.uuid])


def test_a_radiologist_sees_the_study_and_a_claim_button_on_an_arrived_consult(radiologist_client, consult):
    response = radiologist_client.get(page(consult))

    assert response.status_code == 200
    body = response.content.decode()
    assert "咳嗽两周，发热 3 天" in body
    assert url("claim", consult) in body
    assert consult.study.study_uid in body
    assert 'name="findings"' not in body  # not theirs to write until claimed


def test_claiming_locks_the_consult_and_opens_it_on_the_reporting_page(radiologist_client, radiologist, consult):
    response = radiologist_client.post(url("claim", consult))
    assert response.status_code == 302
    assert response["Location"] == page(consult)

    body = radiologist_client.get(page(consult)).content.decode()

    consult.refresh_from_db()
    assert consult.radiologist == radiologist
    assert consult.status == Consult.Status.OPENED
    assert 'name="findings"' in body
    assert "头颅 CT 平扫（正常）" in body  # the CT templates are offered
    assert url("release", consult) in body


def test_a_claim_from_the_worklist_returns_to_the_worklist(radiologist_client, consult):
    worklist = reverse("consults:worklist")
    response = radiologist_client.post(url("claim", consult), {"next": worklist})
    assert response["Location"] == worklist
    response = radiologist_client.post(url("claim", consult), {"next": "https://evil.example/"})
    assert response["Location"] == page(consult)


def test_a_return_address_off_https_is_refused_on_an_https_request(radiologist_client, consult):
    worklist = reverse("consults:worklist")
    response = radiologist_client.post(url("claim", consult), {"next": f"http://testserver{worklist}"}, secure=True)
    assert response["Location"] == page(consult)


def test_claim_next_takes_the_most_urgent_waiting_consult(radiologist_client, radiologist, township, consult):
    emergency = make_consult(township, priority="emergency", kind="DR")

    response = radiologist_client.post(reverse("reading:claim_next"))

    assert response["Location"] == page(emergency)
    emergency.refresh_from_db()
    assert emergency.radiologist == radiologist


def test_another_radiologist_cannot_write_or_sign_a_locked_consult(radiologist, other_radiologist, consult):
    workflow.claim_consult(consult, radiologist)
    client = login(other_radiologist)

    body = client.get(page(consult)).content.decode()
    assert "李医生" in body and 'name="findings"' not in body
    for action in ("save", "sign"):
        response = client.post(url("report", consult), {"findings": "抢签", "impression": "抢签", "action": action})
        assert response.status_code == 403
    assert client.post(url("release", consult)).status_code == 403
    assert client.post(url("claim", consult)).status_code == 403
    consult.refresh_from_db()
    assert consult.radiologist == radiologist
    assert consult.signed_at is None


def test_the_report_form_saves_a_draft_then_signs(radiologist_client, consult, technologist_client):
    radiologist_client.post(url("claim", consult))
    radiologist_client.post(url("report", consult), {"findings": "双肺纹理清晰。", "impression": "", "action": "save"})
    consult.refresh_from_db()
    assert consult.report.findings == "双肺纹理清晰。"
    assert consult.signed_at is None
    # The township does not see a draft.
    assert "双肺纹理清晰" not in technologist_client.get(page(consult)).content.decode()

    response = radiologist_client.post(
        url("report", consult), {"findings": "双肺纹理清晰。", "impression": "胸部 CT 未见异常。", "action": "sign"}
    )

    assert response.status_code == 302
    consult.refresh_from_db()
    assert consult.status == Consult.Status.SIGNED
    body = radiologist_client.get(page(consult)).content.decode()
    assert 'name="findings"' not in body
    assert url("addendum", consult) in body
    assert url("pdf", consult) in body


def test_signing_an_empty_impression_shows_a_message_instead(radiologist_client, consult):
    radiologist_client.post(url("claim", consult))
    response = radiologist_client.post(
        url("report", consult), {"findings": "所见", "impression": "", "action": "sign"}, follow=True
    )
    assert "诊断意见不能为空" in response.content.decode()
    consult.refresh_from_db()
    assert consult.signed_at is None


def test_two_step_signing_through_the_page(township, consult, other_radiologist, radiologist):
    township.requires_second_signature = True
    township.save()
    junior = login(other_radiologist)
    junior.post(url("claim", consult))
    body = junior.get(page(consult)).content.decode()
    assert 'value="preliminary"' in body and 'value="sign"' not in body
    junior.post(url("report", consult), {"findings": "所见", "impression": "初诊意见", "action": "preliminary"})
    consult.refresh_from_db()
    assert consult.status == Consult.Status.PRELIMINARY
    assert junior.post(url("report", consult), {"action": "sign"}).status_code == 403

    senior = login(radiologist)
    assert 'value="sign"' in senior.get(page(consult)).content.decode()
    senior.post(url("report", consult), {"findings": "所见", "impression": "审核后的意见", "action": "sign"})

    consult.refresh_from_db()
    assert consult.status == Consult.Status.SIGNED
    assert consult.report.preliminary_by == other_radiologist
    assert consult.report.signed_by == radiologist


def test_the_township_sees_the_signed_report_and_its_received_button_records_the_delivery_once(
    radiologist, consult, technologist, technologist_client
):
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "右肺下叶见斑片影。", "右肺下叶肺炎。")
    workflow.add_addendum(consult, radiologist, "补充：建议抗感染治疗后复查。")

    body = technologist_client.get(page(consult)).content.decode()

    assert "右肺下叶见斑片影。" in body
    assert "右肺下叶肺炎。" in body
    assert "补充：建议抗感染治疗后复查。" in body
    assert url("pdf", consult) in body
    assert url("receive", consult) in body
    assert url("claim", consult) not in body
    # Seeing the report is not receiving it: a prefetch or a link followed changes nothing.
    consult.refresh_from_db()
    assert consult.status == Consult.Status.SIGNED
    assert consult.delivered_at is None

    response = technologist_client.post(url("receive", consult))

    assert response.status_code == 302
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
    delivered_at = consult.delivered_at
    assert delivered_at is not None
    assert url("receive", consult) not in technologist_client.get(page(consult)).content.decode()
    # A second confirmation (another tab) changes nothing and says so.
    again = technologist_client.post(url("receive", consult), follow=True)
    assert "报告已送达，无需再次确认。" in again.content.decode()
    consult.refresh_from_db()
    assert consult.delivered_at == delivered_at
    assert AuditEvent.objects.filter(action="consults.report.delivered", object_id=str(consult.uuid)).count() == 1
    # The consult page of the township shows it too.
    detail = technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode()
    assert "右肺下叶肺炎。" in detail


def test_the_first_pdf_posted_by_the_township_records_the_delivery_and_a_get_does_not(
    radiologist, consult, technologist_client, radiologist_client
):
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "肝脏形态正常。", "上腹部未见异常。")

    assert technologist_client.get(url("pdf", consult))["Content-Type"] == "application/pdf"
    assert radiologist_client.post(url("pdf", consult))["Content-Type"] == "application/pdf"
    consult.refresh_from_db()
    assert consult.delivered_at is None

    response = technologist_client.post(url("pdf", consult))

    assert response["Content-Type"] == "application/pdf"
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
    first = consult.delivered_at
    assert technologist_client.post(url("pdf", consult))["Content-Type"] == "application/pdf"
    consult.refresh_from_db()
    assert consult.delivered_at == first
    event = AuditEvent.objects.get(action="consults.report.delivered", object_id=str(consult.uuid))
    assert event.detail["channel"] == "pdf"


def test_the_pdf_is_served_once_signed(radiologist, consult, technologist_client):
    assert technologist_client.get(url("pdf", consult)).status_code == 404
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "肝脏形态正常。", "上腹部未见异常。")

    response = technologist_client.get(url("pdf", consult))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    text = PdfReader(io.BytesIO(response.content)).pages[0].extract_text()
    assert "上腹部未见异常" in text
    assert AuditEvent.objects.filter(action="consults.report.printed").exists()


def test_addenda_are_added_on_the_page(radiologist_client, radiologist, consult):
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "所见", "意见")

    radiologist_client.post(url("addendum", consult), {"text": "补充：复核无误。"})

    assert [a.text for a in consult.report.addenda.all()] == ["补充：复核无误。"]
    assert "补充：复核无误。" in radiologist_client.get(page(consult)).content.decode()


def test_a_critical_finding_is_shown_to_the_township_at_once_and_acknowledged(
    radiologist_client, radiologist, consult, technologist, technologist_client
):
    workflow.claim_consult(consult, radiologist)
    radiologist_client.post(url("critical", consult), {"description": "右侧张力性气胸。"})
    finding = CriticalFinding.objects.get(consult=consult)

    alerts = technologist_client.get(reverse("reading:alerts") + "?fragment=1").content.decode()
    assert "右侧张力性气胸。" in alerts
    home = technologist_client.get("/", follow=True).content.decode()  # the township's own page
    assert "右侧张力性气胸。" in home
    assert reverse("reading:acknowledge", args=[finding.uuid]) in home
    body = technologist_client.get(page(consult)).content.decode()
    assert "右侧张力性气胸。" in body
    acknowledge = reverse("reading:acknowledge", args=[finding.uuid])
    assert acknowledge in body

    response = technologist_client.post(acknowledge)

    assert response.status_code == 302
    finding.refresh_from_db()
    assert finding.acknowledged_by == technologist
    assert "右侧张力性气胸。" not in technologist_client.get(reverse("reading:alerts")).content.decode()


def test_the_technologist_corrects_the_request_on_the_page(technologist_client, consult):
    response = technologist_client.post(
        url("request", consult), {"priority": "urgent", "body_part_names": "胸部", "body_parts": "2"}
    )
    assert response.status_code == 302
    consult.refresh_from_db()
    assert (consult.priority, consult.body_parts) == ("urgent", 2)


def test_the_page_offers_the_request_form_until_a_reader_opens_the_consult(
    technologist_client, radiologist_client, consult
):
    assert url("request", consult) in technologist_client.get(page(consult)).content.decode()
    radiologist_client.post(url("claim", consult))  # claims, then opens the reporting page
    radiologist_client.get(page(consult))
    consult.refresh_from_db()
    assert consult.opened_at is not None

    body = technologist_client.get(page(consult)).content.decode()

    assert url("request", consult) not in body
    assert 'name="clinical_history"' not in body


def test_a_correction_posted_after_opening_is_refused_with_a_clear_error(
    technologist_client, radiologist_client, consult
):
    radiologist_client.post(url("claim", consult))
    radiologist_client.get(page(consult))

    response = technologist_client.post(url("request", consult), {"priority": "emergency", "body_parts": "3"})

    assert response.status_code == 409
    assert "医师已开始阅片，申请不能再修改。" in response.content.decode()
    assert page(consult) in response.content.decode()
    consult.refresh_from_db()
    assert (consult.priority, consult.body_parts) == ("routine", 1)
    assert not AuditEvent.objects.filter(action="consults.consult.corrected").exists()


def test_the_send_back_to_the_townships_archive_shows_retrying_then_failed_with_its_reason(
    settings, radiologist, consult, technologist, technologist_client
):
    settings.REPORT_DELIVERY_MAX_ATTEMPTS = 2
    modality = consult.modality
    modality.host, modality.port = "127.0.0.1", _closed_port()
    modality.save()
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "双肺纹理清晰。", "胸部 CT 未见异常。")

    assert "等待回传" in technologist_client.get(page(consult)).content.decode()
    now = timezone.now()
    delivery.deliver_due(now)
    body = technologist_client.get(page(consult)).content.decode()
    assert "回传重试中" in body
    assert "已尝试 1 次" in body
    assert "no association with 127.0.0.1" in body

    delivery.deliver_due(now + timedelta(hours=1))
    for body in (
        technologist_client.get(page(consult)).content.decode(),
        technologist_client.get(reverse("consults:detail", args=[consult.uuid])).content.decode(),
    ):
        assert "回传失败" in body
        assert "no association with 127.0.0.1" in body
        assert url("retry_delivery", consult) in body
    assert (
        "回传失败"
        in technologist_client.get(reverse("consults:facility", args=[consult.facility.uuid])).content.decode()
    )

    response = technologist_client.post(url("retry_delivery", consult))

    assert response.status_code == 302
    consult.delivery.refresh_from_db()
    assert (consult.delivery.status, consult.delivery.attempts) == (ReportDelivery.Status.PENDING, 0)
    assert AuditEvent.objects.filter(action="consults.report.send_retried", actor=technologist).exists()


def test_a_radiologist_adds_a_report_template(radiologist_client):
    response = radiologist_client.post(
        reverse("reading:templates"),
        {
            "kind": "DR",
            "body_part": "骨盆",
            "name": "骨盆正位片（正常）",
            "findings": "骨盆诸骨未见异常。",
            "impression": "骨盆未见异常。",
        },
    )
    assert response.status_code == 302
    assert ReportTemplate.objects.filter(name="骨盆正位片（正常）", kind="DR").exists()
    assert "骨盆正位片（正常）" in radiologist_client.get(reverse("reading:templates")).content.decode()


def test_a_technologist_cannot_take_a_reader_step_on_their_own_consult(technologist_client, consult):
    assert technologist_client.post(url("claim", consult)).status_code == 403
    assert technologist_client.get(reverse("reading:templates")).status_code == 403


def test_an_administrator_gets_no_reading_pages(administrator_client, consult):
    assert administrator_client.get(page(consult)).status_code == 403


def test_a_technologist_of_another_township_gets_404_on_every_page_of_a_consult(outsider_client, radiologist, consult):
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "所见", "意见")
    finding = workflow.flag_critical(consult, radiologist, "危急值")

    for name in ("page", "pdf"):
        assert outsider_client.get(url(name, consult)).status_code == 404, name
    for name in ("claim", "release", "reassign", "report", "addendum", "critical", "request"):
        assert outsider_client.post(url(name, consult), {"text": "x", "description": "x"}).status_code == 404, name
    assert outsider_client.post(reverse("reading:acknowledge", args=[finding.uuid])).status_code == 404
    assert "危急值" not in outsider_client.get(reverse("reading:alerts") + "?fragment=1").content.decode()
    finding.refresh_from_db()
    assert finding.acknowledged_at is None


def test_an_anonymous_visitor_is_sent_to_log_in(client, consult):
    response = client.get(page(consult))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_reporting_page_speaks_english_when_asked(settings, radiologist_client, consult):
    radiologist_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    body = radiologist_client.get(page(consult)).content.decode()
    assert "Reading and report" in body
    assert ">Claim<" in body


def test_sign_and_next_signs_then_opens_the_most_urgent_waiting_consult(
    radiologist, radiologist_client, township, consult
):
    routine = make_consult(township, make_study(township), arrived_at=timezone.now() - timedelta(hours=3))
    emergency = make_consult(township, make_study(township), priority="emergency")
    radiologist_client.post(url("claim", consult))

    response = radiologist_client.post(
        url("report", consult), {"findings": "双肺纹理清晰。", "impression": "未见异常。", "action": "sign_next"}
    )

    consult.refresh_from_db()
    emergency.refresh_from_db()
    assert consult.status == Consult.Status.SIGNED
    assert response.status_code == 302 and response["Location"] == page(emergency)
    assert emergency.radiologist == radiologist
    assert Consult.objects.get(pk=routine.pk).radiologist is None


def test_sign_and_next_opens_the_readers_own_assigned_consults_before_claiming_waiting_ones(
    radiologist, radiologist_client, township, consult
):
    # The roster gave this reader two consults; an emergency waits unassigned. The reader's
    # own come first, the more urgent of them first, and is opened (the POST is the reader
    # at work), so no one is left holding consults the "next" button never reaches.
    routine_mine = make_consult(township, make_study(township), radiologist=radiologist, status=Consult.Status.ASSIGNED)
    urgent_mine = make_consult(
        township, make_study(township), radiologist=radiologist, status=Consult.Status.ASSIGNED, priority="urgent"
    )
    waiting = make_consult(township, make_study(township), priority="emergency")
    radiologist_client.post(url("claim", consult))

    response = radiologist_client.post(
        url("report", consult), {"findings": "所见", "impression": "意见", "action": "sign_next"}
    )

    assert response.status_code == 302 and response["Location"] == page(urgent_mine)
    urgent_mine.refresh_from_db()
    assert urgent_mine.status == Consult.Status.OPENED and urgent_mine.opened_at is not None
    assert Consult.objects.get(pk=routine_mine.pk).status == Consult.Status.ASSIGNED
    assert Consult.objects.get(pk=waiting.pk).radiologist is None
    assert AuditEvent.objects.filter(action="consults.consult.opened", object_id=str(urgent_mine.uuid)).exists()


def test_sign_and_next_with_nothing_waiting_goes_back_to_the_worklist(radiologist_client, consult):
    radiologist_client.post(url("claim", consult))

    response = radiologist_client.post(
        url("report", consult), {"findings": "所见", "impression": "意见", "action": "sign_next"}, follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("consults:worklist")
    assert "没有待领取的会诊。" in response.content.decode()


def test_the_report_form_offers_sign_and_next_shortcuts_and_a_confirmation(radiologist_client, consult):
    radiologist_client.post(url("claim", consult))

    body = radiologist_client.get(page(consult)).content.decode()

    assert 'value="sign_next"' in body and "签发并下一例" in body
    assert '<dialog id="sign-confirm"' in body and "确认签发" in body
    assert "<kbd>Ctrl</kbd>+<kbd>Enter</kbd>" in body
    assert "onclick" not in body and "onsubmit" not in body  # the behaviour is in static/js/reading.js


def test_the_reading_page_shows_sex_as_a_word(radiologist_client, consult):
    body = radiologist_client.get(page(consult)).content.decode()

    assert "<dd>男</dd>" in body
    assert "<dd>M</dd>" not in body


def test_the_template_form_labels_each_field_and_suggests_the_body_parts(radiologist_client):
    body = radiologist_client.get(reverse("reading:templates")).content.decode()

    for field in ("template-kind", "template-body-part", "template-name", "template-findings", "template-impression"):
        assert f'<label for="{field}">' in body and f'id="{field}"' in body
    assert '<option value="胸部">' in body  # from the body-part vocabulary


# --- A bad field: its error beside it, in the user's language, and nothing typed lost ---------


def test_signing_with_an_empty_impression_shows_the_error_beside_it_and_keeps_the_findings(radiologist_client, consult):
    radiologist_client.post(url("claim", consult))
    for action in ("sign", "sign_next"):
        response = radiologist_client.post(
            url("report", consult), {"findings": "右肺下叶见斑片影，边缘模糊。", "impression": "  ", "action": action}
        )

        assert response.status_code == 400, action
        body = response.content.decode()
        assert 'id="impression-errors"' in body and "诊断意见不能为空。" in body
        assert "右肺下叶见斑片影，边缘模糊。</textarea>" in body  # the half-written report is still there
    consult.refresh_from_db()
    assert consult.signed_at is None and consult.status == Consult.Status.OPENED


def test_a_refused_report_is_shown_in_english_to_an_english_reader(settings, radiologist_client, consult):
    radiologist_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    radiologist_client.post(url("claim", consult))

    response = radiologist_client.post(url("report", consult), {"findings": "所见", "impression": "", "action": "sign"})

    assert response.status_code == 400
    assert "The impression cannot be empty." in response.content.decode()


def test_an_unknown_report_action_is_refused_and_keeps_the_text(radiologist_client, consult):
    radiologist_client.post(url("claim", consult))

    response = radiologist_client.post(
        url("report", consult), {"findings": "双肺纹理清晰。", "impression": "未见异常。", "action": "publish"}
    )

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="action-errors"' in body and "未知的报告操作。" in body
    assert "双肺纹理清晰。</textarea>" in body and "未见异常。</textarea>" in body
    consult.refresh_from_db()
    assert consult.signed_at is None
    assert not hasattr(consult, "report") or consult.report.findings == ""


def test_a_report_text_beyond_the_limit_is_refused_beside_its_field(radiologist_client, consult):
    from consults.forms import TEXT_LIMIT

    radiologist_client.post(url("claim", consult))

    response = radiologist_client.post(
        url("report", consult), {"findings": "影" * (TEXT_LIMIT + 1), "impression": "意见", "action": "save"}
    )

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="findings-errors"' in body and str(TEXT_LIMIT) in body
    assert "意见</textarea>" in body


def test_a_draft_posted_without_its_impression_keeps_the_saved_one(radiologist_client, radiologist, consult):
    workflow.claim_consult(consult, radiologist)
    workflow.save_draft(consult, radiologist, "所见", "已写的意见")

    response = radiologist_client.post(url("report", consult), {"findings": "新的所见", "action": "save"})

    assert response.status_code == 302
    consult.report.refresh_from_db()
    assert (consult.report.findings, consult.report.impression) == ("新的所见", "已写的意见")


def test_a_bad_field_from_someone_who_may_not_take_the_step_is_still_a_403(radiologist, other_radiologist, consult):
    workflow.claim_consult(consult, radiologist)
    client = login(other_radiologist)

    assert client.post(url("report", consult), {"impression": "", "action": "sign"}).status_code == 403
    assert client.post(url("report", consult), {"action": "publish"}).status_code == 403
    assert client.post(url("critical", consult), {"description": ""}).status_code == 403


def test_an_empty_addendum_is_refused_beside_its_field(radiologist_client, radiologist, consult):
    workflow.claim_consult(consult, radiologist)
    workflow.sign_final(consult, radiologist, "所见", "意见")

    response = radiologist_client.post(url("addendum", consult), {"text": "   "})

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="addendum-errors"' in body and "补充内容不能为空。" in body
    assert not consult.report.addenda.exists()


def test_an_empty_critical_finding_is_refused_with_its_section_open(radiologist_client, radiologist, consult):
    workflow.claim_consult(consult, radiologist)

    response = radiologist_client.post(url("critical", consult), {"description": ""})

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="critical-errors"' in body and "请填写危急值内容。" in body
    assert "<details open>" in body
    assert not CriticalFinding.objects.exists()


def test_reassigning_to_a_reader_not_on_duty_is_refused_beside_the_list(
    radiologist_client, radiologist, other_radiologist, consult
):
    from tests.factories import make_shift

    make_shift(radiologist, timezone.now() - timedelta(hours=1))
    workflow.claim_consult(consult, radiologist)  # 李医生 is a senior: may reassign

    for to in (str(other_radiologist.uuid), "not-a-uuid"):  # 王医生 has no shift now
        response = radiologist_client.post(url("reassign", consult), {"to": to})

        assert response.status_code == 400, to
        body = response.content.decode()
        assert 'id="reassign-errors"' in body and "该医师不在班或无相应阅片资格。" in body
    consult.refresh_from_db()
    assert consult.radiologist == radiologist


def test_a_correction_with_a_bad_count_is_refused_beside_it_and_keeps_what_was_typed(technologist_client, consult):
    detail = reverse("consults:detail", args=[consult.uuid])

    response = technologist_client.post(
        url("request", consult),
        {"clinical_history": "外伤后胸痛 2 小时", "body_parts": "0", "priority": "urgent", "next": detail},
    )

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="request-part-count-errors"' in body and "部位数至少为 1。" in body
    assert "外伤后胸痛 2 小时</textarea>" in body
    assert '<option value="urgent" selected>' in body
    assert f'name="next" value="{detail}"' in body  # a second try returns where the first came from
    consult.refresh_from_db()
    assert (consult.clinical_history, consult.priority) == ("咳嗽两周，发热 3 天", "routine")


def test_a_correction_with_an_unknown_priority_is_refused_beside_it(technologist_client, consult):
    response = technologist_client.post(url("request", consult), {"priority": "whenever"})

    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="request-priority-errors"' in body and "无效的优先级。" in body
    consult.refresh_from_db()
    assert consult.priority == "routine"
