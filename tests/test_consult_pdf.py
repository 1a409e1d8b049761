"""The printable report: Chinese text in an embedded font (extracted back with pypdf), the
header, the township, the signers, and the QR code's address; and the same PDF sent back
to the township's archive as DICOM Encapsulated PDF over a real association."""

from __future__ import annotations

import io
import socket
from datetime import timedelta

import pytest
from django.utils import timezone
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import EncapsulatedPDFStorage
from pypdf import PdfReader

from consults import delivery, workflow
from consults.models import Consult
from consults.pdf import render_report_pdf, report_url
from facilities.models import AuditEvent, User
from tests.factories import make_consult, make_study, make_user

FINDINGS = "右肺上叶尖段见一磨玻璃结节，直径约 8 mm，边界清楚。"
IMPRESSION = "右肺上叶磨玻璃结节，建议 3 个月后复查。"


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "".join(page.extract_text() for page in reader.pages).replace(" ", "").replace("\n", "")


def signed_consult(township, modality, *, review: bool = False) -> Consult:
    study = make_study(township, modality, description="胸部 CT 平扫")
    consult = make_consult(
        township, study, body_part_names="胸部", clinical_history="咳嗽两周", arrived_at=timezone.now()
    )
    li = make_user(User.Role.RADIOLOGIST, None, username="li", display_name="李医生")
    workflow.claim_consult(consult, li)
    if review:
        township.requires_second_signature = True
        township.save()
        workflow.sign_preliminary(consult, li, FINDINGS, IMPRESSION)
        zhao = make_user(User.Role.RADIOLOGIST, None, username="zhao", display_name="赵主任", is_senior=True)
        workflow.sign_final(consult, zhao)
    else:
        workflow.sign_final(consult, li, FINDINGS, IMPRESSION)
    consult.refresh_from_db()
    return consult


def test_the_pdf_report_carries_the_chinese_text_header_township_and_signers(county, township, ct_modality):
    consult = signed_consult(township, ct_modality, review=True)
    workflow.add_addendum(consult, consult.radiologist, "补充：纵隔窗未见肿大淋巴结。")

    pdf = render_report_pdf(consult, consult.report)

    assert pdf.startswith(b"%PDF")
    text = text_of(pdf)
    for expected in (
        "汉阴县人民医院",
        "医学影像诊断报告",
        "漩涡镇中心卫生院",
        FINDINGS.replace(" ", ""),
        IMPRESSION.replace(" ", ""),
        "咳嗽两周",
        "李医生",
        "赵主任",
        "初诊医师",
        "审核医师",
        "补充：纵隔窗未见肿大淋巴结。",
        report_url(consult).replace(" ", ""),
    ):
        assert expected in text, expected


def test_the_pdf_embeds_its_cjk_font(township, ct_modality):
    consult = signed_consult(township, ct_modality)
    pdf = render_report_pdf(consult, consult.report)
    assert b"/FontFile2" in pdf


def test_the_qr_code_points_at_the_report_page_on_the_site(settings, township, ct_modality):
    settings.SITE_URL = "https://yunying.hanyin.example"
    consult = signed_consult(township, ct_modality)
    assert report_url(consult) == f"https://yunying.hanyin.example/reading/{consult.uuid}/"


@pytest.fixture
def township_archive():
    """A storage SCP standing in for the township's own PACS, on a free port."""
    received = []

    def handle_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title="XUANWO_CT")
    ae.add_supported_context(EncapsulatedPDFStorage, ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()


def test_a_signed_report_is_sent_to_the_township_archive_as_encapsulated_pdf(township, ct_modality, township_archive):
    port, received = township_archive
    ct_modality.host, ct_modality.port = "127.0.0.1", port
    ct_modality.save()
    consult = signed_consult(township, ct_modality)

    assert delivery.send_report_to_township(consult) is True

    (ds,) = received
    assert ds.SOPClassUID == EncapsulatedPDFStorage
    assert ds.StudyInstanceUID == consult.study.study_uid
    assert ds.PatientID == consult.study.patient.patient_id
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert IMPRESSION.replace(" ", "") in text_of(bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength])
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
    assert consult.delivered_at >= consult.signed_at
    assert AuditEvent.objects.filter(action="consults.report.sent", object_id=str(consult.uuid)).exists()


def test_a_modality_without_an_address_gets_nothing_sent(township, ct_modality):
    consult = signed_consult(township, ct_modality)
    assert delivery.send_report_to_township(consult) is False
    consult.refresh_from_db()
    assert consult.delivered_at is None


def test_an_unreachable_archive_leaves_the_report_undelivered_and_says_so(township, ct_modality):
    ct_modality.host, ct_modality.port = "127.0.0.1", _closed_port()
    ct_modality.save()
    consult = signed_consult(township, ct_modality)

    assert delivery.send_report_to_township(consult) is False
    assert AuditEvent.objects.filter(action="consults.report.send_failed", object_id=str(consult.uuid)).exists()
    consult.refresh_from_db()
    assert consult.delivered_at is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_signing_queues_the_send_back(township, ct_modality, township_archive, django_capture_on_commit_callbacks):
    port, received = township_archive
    ct_modality.host, ct_modality.port = "127.0.0.1", port
    ct_modality.save()
    with django_capture_on_commit_callbacks(execute=True):
        consult = signed_consult(township, ct_modality)
    assert len(received) == 1
    consult.refresh_from_db()
    assert consult.delivered_at is not None
    assert consult.delivered_at - consult.signed_at < timedelta(minutes=5)
