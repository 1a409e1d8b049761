"""The public page a printed report's QR code opens: no login; facility, exam, signer and
whether the content still matches its digest taken at signing; the clinical content only
after the patient's birth date; wrong dates limited and every look audited."""

from __future__ import annotations

from datetime import date

import pytest
from django.test import Client
from django.urls import reverse

from cloudpacs.models import Patient
from consults import workflow
from consults.models import Report, ReportVerification
from consults.verification import MAX_FAILURES_PER_ADDRESS, MAX_FAILURES_PER_REPORT, content_digest
from facilities.models import AuditEvent, User
from tests.factories import make_consult, make_study, make_user

FINDINGS = "右肺上叶尖段见一磨玻璃结节，直径约 8 mm。"
IMPRESSION = "右肺上叶磨玻璃结节，建议 3 个月后复查。"


@pytest.fixture
def signed(county, township, ct_modality):
    study = make_study(township, ct_modality, description="胸部 CT 平扫")
    Patient.objects.filter(pk=study.patient_id).update(birth_date=date(1961, 4, 12))
    consult = make_consult(township, study, body_part_names="胸部")
    reader = make_user(User.Role.RADIOLOGIST, county, username="dr_li", display_name="李医生")
    workflow.claim_consult(consult, reader)
    workflow.sign_final(consult, reader, FINDINGS, IMPRESSION)
    consult.refresh_from_db()
    return consult


def url(consult) -> str:
    return reverse("consults:verify", args=[consult.report.verification.token])


def test_signing_records_a_random_token_and_the_digest_of_the_signed_content(signed):
    verification = ReportVerification.objects.get(report=signed.report)

    assert verification.at_signing
    assert len(verification.token) >= 32 and str(signed.uuid) not in verification.token
    assert verification.content_sha256 == content_digest(signed.report)
    assert len(verification.content_sha256) == 64


def test_anyone_without_logging_in_sees_facility_exam_signer_and_that_it_is_genuine(client: Client, signed):
    response = client.get(url(signed))

    assert response.status_code == 200
    page = response.content.decode()
    assert "报告真实" in page
    assert "漩涡镇中心卫生院" in page
    assert "CT · 胸部" in page
    assert "李医生" in page and "签发医师" in page
    assert signed.report.verification.content_sha256 in page
    # No clinical content and no patient before the second factor.
    assert "磨玻璃结节" not in page
    assert "张三" not in page
    event = AuditEvent.objects.get(action="consults.report.verified")
    assert event.actor is None and event.detail == {"intact": True, "unlocked": False}


def test_the_patients_birth_date_shows_the_report(client: Client, signed):
    response = client.post(url(signed), {"birth_date": "1961-04-12"})

    page = response.content.decode()
    assert response.status_code == 200
    assert FINDINGS in page and IMPRESSION in page
    assert "张三" in page
    assert AuditEvent.objects.filter(action="consults.report.verified", detail__unlocked=True).exists()


def test_a_wrong_birth_date_shows_nothing_and_is_counted(client: Client, signed):
    response = client.post(url(signed), {"birth_date": "1961-04-13"})

    page = response.content.decode()
    assert "出生日期不符。" in page
    assert "磨玻璃结节" not in page
    assert AuditEvent.objects.filter(action="consults.report.verification_failed").count() == 1


def test_a_malformed_date_is_a_message_and_not_a_failure(client: Client, signed):
    page = client.post(url(signed), {"birth_date": "not a date"}).content.decode()

    assert "磨玻璃结节" not in page
    assert 'class="error"' in page
    assert not AuditEvent.objects.filter(action="consults.report.verification_failed").exists()


def test_after_too_many_wrong_dates_even_the_right_one_is_refused(client: Client, signed):
    for _ in range(MAX_FAILURES_PER_REPORT):
        client.post(url(signed), {"birth_date": "2000-01-01"})

    response = client.post(url(signed), {"birth_date": "1961-04-12"})

    assert response.status_code == 429
    assert "尝试次数过多" in response.content.decode()
    assert "磨玻璃结节" not in response.content.decode()


def test_one_address_guessing_many_reports_is_stopped_too(client: Client, signed, township, ct_modality):
    verification = signed.report.verification
    for _ in range(MAX_FAILURES_PER_ADDRESS):
        AuditEvent.objects.create(
            action="consults.report.verification_failed", address="127.0.0.1", object_id="another-report"
        )

    response = client.post(reverse("consults:verify", args=[verification.token]), {"birth_date": "1961-04-12"})

    assert response.status_code == 429


def test_a_report_changed_after_signing_is_shown_as_not_genuine(client: Client, signed):
    Report.objects.filter(pk=signed.report.pk).update(impression="篡改后的意见")

    page = client.get(url(signed)).content.decode()

    assert "报告真实" not in page
    assert "不一致" in page
    assert AuditEvent.objects.get(action="consults.report.verified").detail["intact"] is False


def test_an_unknown_token_is_a_404(client: Client, signed):
    assert client.get(reverse("consults:verify", args=["x" * 32])).status_code == 404


def test_a_report_signed_before_verification_gets_one_when_printed_and_says_so(client: Client, signed):
    from consults.pdf import render_report_pdf

    ReportVerification.objects.all().delete()
    render_report_pdf(signed, signed.report)
    verification = ReportVerification.objects.get(report=signed.report)

    assert not verification.at_signing
    page = client.get(reverse("consults:verify", args=[verification.token])).content.decode()
    assert "签发于验证功能上线前" in page
