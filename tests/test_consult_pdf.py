"""The printable report: Chinese text in an embedded font (extracted back with pypdf), the
header, the township, the signers, and the QR code's address; and the same PDF sent back
to the township's archive as DICOM Encapsulated PDF over a real association."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import EncapsulatedPDFStorage
from pypdf import PdfReader

from consults import delivery, outbox, workflow
from consults.models import Consult, ReportDelivery
from consults.pdf import render_report_pdf
from consults.verification import verification_url
from facilities.models import AuditEvent, User
from tests.factories import make_consult, make_study, make_user

FINDINGS = "右肺上叶尖段见一磨玻璃结节，直径约 8 mm，边界清楚。"
IMPRESSION = "右肺上叶磨玻璃结节，建议 3 个月后复查。"


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "".join(page.extract_text() for page in reader.pages).replace(" ", "").replace("\n", "")


def signed_consult(township, modality, *, review: bool = False) -> Consult:
    study = make_study(township, modality, description="胸部 CT 平扫")
    consult = make_consult(
        township, study, body_part_names="胸部", clinical_history="咳嗽两周", arrived_at=timezone.now()
    )
    li = User.objects.filter(username="li").first() or make_user(
        User.Role.RADIOLOGIST, None, username="li", display_name="李医生"
    )
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
        verification_url(consult.report.verification).replace(" ", ""),
    ):
        assert expected in text, expected


def test_the_pdf_embeds_its_cjk_font(township, ct_modality):
    consult = signed_consult(township, ct_modality)
    pdf = render_report_pdf(consult, consult.report)
    assert b"/FontFile2" in pdf


def test_the_qr_code_carries_a_random_token_to_the_public_verification_page(settings, township, ct_modality):
    settings.SITE_URL = "https://yunying.hanyin.example"
    consult = signed_consult(township, ct_modality)
    token = consult.report.verification.token

    url = verification_url(consult.report.verification)

    assert url == f"https://yunying.hanyin.example/verify/{token}/"
    assert len(token) >= 32 and str(consult.uuid) not in url
    assert url in text_of(render_report_pdf(consult, consult.report))
    # Printed twice, the same report carries the same token.
    assert url in text_of(render_report_pdf(consult, consult.report))


def test_the_pdf_shows_the_critical_finding_and_its_acknowledgement(township, ct_modality, technologist):
    consult = signed_consult(township, ct_modality)
    finding = workflow.flag_critical(consult, consult.radiologist, "右侧张力性气胸，请立即处理。")
    workflow.acknowledge_critical(finding, technologist)

    text = text_of(render_report_pdf(consult, consult.report))

    assert "危急值" in text
    assert "右侧张力性气胸，请立即处理。" in text
    assert "已于" in text and "确认" in text


def _line_starts(pdf: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    lines = []
    for page in reader.pages:
        lines += [line.strip() for line in page.extract_text().splitlines() if line.strip()]
    return [line[0] for line in lines]


def test_no_line_of_the_report_starts_with_chinese_closing_punctuation(township, ct_modality):
    consult = signed_consult(township, ct_modality)
    report = consult.report
    # Lines of text whose marks fall at every position near a line's end, in both of
    # reportlab's wrapping paths: a paragraph with line breaks, and one without.
    marks = "，。；：、）"
    report.findings = "\n".join(f"{'影' * width}{mark}未见异常" for width in range(38, 50) for mark in marks)
    report.impression = "".join(f"{'肺' * (n % 11)}{marks[n % len(marks)]}" for n in range(1, 200))
    breaking = [line for line in _line_starts(render_report_pdf(consult, report)) if line in "，。、；：？！）》」』】"]
    assert breaking == []


class Archive:
    """A storage SCP standing in for the township's own PACS, on a fixed local port: down
    until `start`, so a test can show the outbox waiting for it."""

    def __init__(self) -> None:
        self.port = _closed_port()
        self.received: list = []
        self.server = None

    def start(self) -> None:
        def handle_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received.append(ds)
            return 0x0000

        ae = AE(ae_title="XUANWO_CT")
        ae.add_supported_context(EncapsulatedPDFStorage, ExplicitVRLittleEndian)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def archive(ct_modality):
    """The township's archive, down, at the CT modality's address."""
    down = Archive()
    ct_modality.host, ct_modality.port = "127.0.0.1", down.port
    ct_modality.save()
    try:
        yield down
    finally:
        down.stop()


@pytest.fixture
def township_archive(archive):
    archive.start()
    return archive


def test_signing_only_writes_the_send_back_to_the_outbox(
    township, ct_modality, archive, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        consult = signed_consult(township, ct_modality)

    outbox = ReportDelivery.objects.get(consult=consult)
    assert outbox.status == ReportDelivery.Status.PENDING
    assert outbox.attempts == 0
    assert outbox.destination == f"XUANWO_CT@127.0.0.1:{archive.port}"
    assert outbox.next_attempt_at <= timezone.now()
    assert consult.status == Consult.Status.SIGNED
    # Nothing dialled the archive in the signing request: no attempt, no failure recorded.
    assert not AuditEvent.objects.filter(action="consults.report.send_failed").exists()
    assert AuditEvent.objects.filter(action="consults.report.send_queued", object_id=str(consult.uuid)).exists()


def test_a_signed_report_is_sent_to_the_township_archive_as_encapsulated_pdf(township, ct_modality, township_archive):
    consult = signed_consult(township, ct_modality)

    assert delivery.deliver_due() == {consult.delivery.pk: ReportDelivery.Status.SENT}

    (ds,) = township_archive.received
    assert ds.SOPClassUID == EncapsulatedPDFStorage
    assert ds.SOPInstanceUID == consult.delivery.sop_instance_uid
    assert ds.StudyInstanceUID == consult.study.study_uid
    assert ds.PatientID == consult.study.patient.patient_id
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert IMPRESSION.replace(" ", "") in text_of(bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength])
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
    assert consult.delivered_at >= consult.signed_at
    assert consult.delivery.status == ReportDelivery.Status.SENT
    assert AuditEvent.objects.filter(action="consults.report.sent", object_id=str(consult.uuid)).exists()


def test_a_modality_without_an_address_gets_nothing_sent(township, ct_modality):
    consult = signed_consult(township, ct_modality)
    assert not ReportDelivery.objects.filter(consult=consult).exists()
    assert delivery.deliver_due() == {}
    consult.refresh_from_db()
    assert consult.delivered_at is None


def test_an_archive_down_at_first_gets_the_report_exactly_once_when_it_comes_up(township, ct_modality, archive):
    consult = signed_consult(township, ct_modality)
    outbox = consult.delivery
    now = timezone.now()

    assert delivery.deliver_due(now) == {outbox.pk: ReportDelivery.Status.RETRYING}
    outbox.refresh_from_db()
    assert outbox.attempts == 1
    assert "no association" in outbox.last_error
    assert outbox.next_attempt_at == now + delivery.backoff(1)
    consult.refresh_from_db()
    assert consult.delivered_at is None
    assert delivery.deliver_due(now + timedelta(seconds=1)) == {}  # not due again yet

    archive.start()
    later = outbox.next_attempt_at
    assert delivery.deliver_due(later) == {outbox.pk: ReportDelivery.Status.SENT}
    assert delivery.deliver_due(later + timedelta(hours=2)) == {}
    assert delivery.deliver(outbox.pk, later + timedelta(hours=3)) is None

    assert len(archive.received) == 1
    assert archive.received[0].SOPInstanceUID == outbox.sop_instance_uid
    outbox.refresh_from_db()
    assert (outbox.status, outbox.attempts, outbox.last_error) == (ReportDelivery.Status.SENT, 2, "")
    consult.refresh_from_db()
    assert consult.status == Consult.Status.DELIVERED
    assert AuditEvent.objects.filter(action="consults.report.sent").count() == 1


def test_retries_wait_longer_each_time_up_to_an_hour(settings):
    settings.REPORT_DELIVERY_RETRY_SECONDS = 60
    assert [delivery.backoff(n).total_seconds() for n in (1, 2, 3, 7, 20)] == [60, 120, 240, 3600, 3600]


def test_after_the_last_attempt_the_send_back_is_failed_with_its_reason(settings, township, ct_modality, archive):
    settings.REPORT_DELIVERY_MAX_ATTEMPTS = 2
    consult = signed_consult(township, ct_modality)
    outbox = consult.delivery
    now = timezone.now()

    delivery.deliver_due(now)
    assert delivery.deliver_due(now + timedelta(hours=1)) == {outbox.pk: ReportDelivery.Status.FAILED}
    assert delivery.deliver_due(now + timedelta(days=1)) == {}

    outbox.refresh_from_db()
    assert outbox.status == ReportDelivery.Status.FAILED
    assert outbox.attempts == 2
    assert f"127.0.0.1:{archive.port}" in outbox.last_error
    final = AuditEvent.objects.filter(action="consults.report.send_failed").order_by("-id").first()
    assert final.detail["final"] is True


def test_a_failed_send_back_can_be_tried_again(settings, township, ct_modality, archive):
    settings.REPORT_DELIVERY_MAX_ATTEMPTS = 1
    consult = signed_consult(township, ct_modality)
    delivery.deliver_due()
    outbox = ReportDelivery.objects.get(consult=consult)
    assert outbox.status == ReportDelivery.Status.FAILED

    assert delivery.retry(outbox, consult.radiologist) is True
    archive.start()

    assert delivery.deliver_due() == {outbox.pk: ReportDelivery.Status.SENT}
    assert len(archive.received) == 1
    with pytest.raises(workflow.WorkflowError, match="没有失败"):  # only a failed one
        delivery.retry(outbox, consult.radiologist)


def test_one_archive_that_is_down_is_dialled_once_per_run(township, ct_modality, archive):
    first = signed_consult(township, ct_modality)
    second = signed_consult(township, ct_modality)

    outcome = delivery.deliver_due()

    assert outcome == {first.delivery.pk: "retrying", second.delivery.pk: "retrying"}
    second.delivery.refresh_from_db()
    assert second.delivery.last_error.startswith("not tried: no association")


def test_a_row_claimed_by_one_run_is_not_sent_by_another(township, ct_modality, township_archive):
    consult = signed_consult(township, ct_modality)
    now = timezone.now()
    # Another process is sending it.
    assert outbox.claim(ReportDelivery, consult.delivery.pk, now, delivery._lease()) is True

    assert delivery.deliver_due(now) == {}
    assert township_archive.received == []
    # That process died mid-attempt: once its lease has run out the row is taken up again.
    assert delivery.deliver_due(now + timedelta(hours=1)) == {consult.delivery.pk: "sent"}
    assert len(township_archive.received) == 1


def test_a_run_with_its_time_used_up_leaves_the_rest_for_the_next(township, ct_modality, township_archive):
    first = signed_consult(township, ct_modality)
    second = signed_consult(township, ct_modality)

    assert delivery.deliver_due(budget_seconds=-1) == {}
    assert delivery.deliver_due() == {first.delivery.pk: "sent", second.delivery.pk: "sent"}


@pytest.mark.parametrize("value", ["Wu^Chao=吴^超", "王^芳", "=张^三"])
def test_the_report_sent_back_keeps_the_patients_name_as_received(
    township, ct_modality, township_archive, tmp_path, value
):
    from consults.services import open_consult_for_study
    from tests.dicomweb_support import ingest
    from tests.factories import make_dataset

    instance = ingest(
        make_dataset(patient_name=value, character_set="ISO_IR 192", PatientSex="F"), ct_modality, tmp_path / "in"
    )
    consult = open_consult_for_study(instance.series.study)
    reader = make_user(User.Role.RADIOLOGIST, None, username="li", display_name="李医生")
    workflow.claim_consult(consult, reader)
    workflow.sign_final(consult, reader, FINDINGS, IMPRESSION)

    delivery.deliver_due()

    (ds,) = township_archive.received
    assert str(ds.PatientName) == value
    assert ds.PatientSex == "F"


def test_the_pdf_shows_the_name_without_separators_and_sex_as_a_word(township, ct_modality):
    consult = signed_consult(township, ct_modality)
    patient = consult.study.patient
    patient.name, patient.name_alphabetic, patient.name_ideographic, patient.sex = (
        "Wu^Chao=吴^超",
        "Wu^Chao",
        "吴^超",
        "F",
    )
    patient.save()

    text = text_of(render_report_pdf(consult, consult.report))

    assert "吴超" in text and "吴^超" not in text
    assert "性别女" in text


def test_the_english_pdf_names_the_body_part_in_english(township, ct_modality):
    """The English report printed 检查部位 as the consult stores it: 胸部."""
    consult = signed_consult(township, ct_modality)

    text = text_of(render_report_pdf(consult, consult.report, language="en"))

    assert "Chest" in text and "胸部" not in text
    # Without parts, the console's description, in English where its words are known.
    type(consult).objects.filter(pk=consult.pk).update(body_part_names="")
    consult.refresh_from_db()
    assert "ChestCTnon-contrast" in text_of(render_report_pdf(consult, consult.report, language="en"))


def test_the_pdf_names_the_body_part_as_the_pages_do(township, ct_modality):
    """Pushed without an order, a study's consult names no parts: the pages showed its
    series' BodyPartExamined (胸部), the PDF printed the console's description (胸部 CT 平扫)."""
    consult = signed_consult(township, ct_modality)
    type(consult).objects.filter(pk=consult.pk).update(body_part_names="")
    consult.study.series.update(body_part_examined="CHEST")
    consult.refresh_from_db()

    assert "检查部位胸部检查日期" in text_of(render_report_pdf(consult, consult.report))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="needs dciodvfy (apt-get install dicom3tools)")
def test_dciodvfy_finds_no_error_in_the_report_sent_back(township, ct_modality, tmp_path):
    # What the platform makes must be valid DICOM (PS3.3 A.45.1 Encapsulated PDF IOD):
    # the SC Equipment module's Conversion Type (Type 1) was missing.
    from consults.models import Report

    consult = signed_consult(township, ct_modality)
    report = Report.objects.get(consult=consult)
    ds = delivery.encapsulated_pdf(consult, report, render_report_pdf(consult, report))
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    said = (result.stdout + result.stderr).splitlines()
    print("\n".join(said))
    assert [line for line in said if line.startswith("Error")] == []


# The township's archive in a process of its own, bound to 127.0.0.1: its sockets are not
# among the test's. It prints its port, then each stored instance's SOP Instance UID.
ARCHIVE_SCRIPT = """
import sys
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import EncapsulatedPDFStorage

def on_store(event):
    print(event.request.AffectedSOPInstanceUID, flush=True)
    return 0x0000

ae = AE(ae_title="XUANWO_CT")
ae.add_supported_context(EncapsulatedPDFStorage, ExplicitVRLittleEndian)
server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
"""


def test_a_report_is_sent_back_from_a_process_holding_over_1024_descriptors(township, ct_modality, monkeypatch):
    """The association that sends the report back checked its socket with pynetdicom's
    select(), which raises for a descriptor numbered 1024 or more: from a worker holding
    that many (connections, files) the connection was taken for closed and every report
    failed ("no C-STORE response"). Here the test's process holds over 1,100."""
    import sys

    from pynetdicom import transport

    from tests.processes import descriptors_past

    archive_process = subprocess.Popen(
        [sys.executable, "-c", ARCHIVE_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert archive_process.stdout is not None
    ct_modality.host, ct_modality.port = "127.0.0.1", int(archive_process.stdout.readline())
    ct_modality.save()
    consult = signed_consult(township, ct_modality)
    opened: list[int] = []
    stock_connect = transport.AssociationSocket.connect

    def recording(sock, address):  # the socket's number, once it is connected
        stock_connect(sock, address)
        opened.append(sock.socket.fileno() if sock.socket is not None else -1)

    monkeypatch.setattr(transport.AssociationSocket, "connect", recording)
    try:
        with descriptors_past(1100):
            outcome = delivery.deliver_due()
    finally:
        received, _ = archive_process.communicate("", timeout=30)
    assert len(opened) == 1 and opened[0] >= 1024, opened
    consult.delivery.refresh_from_db()
    assert outcome == {consult.delivery.pk: ReportDelivery.Status.SENT}, consult.delivery.last_error
    assert received.split() == [consult.delivery.sop_instance_uid]


def printed(client, consult, **query) -> tuple[str, str]:
    response = client.get(f"/reading/{consult.uuid}/report.pdf", query)
    assert response.status_code == 200
    return text_of(response.content), response["Content-Language"]


def test_the_printed_reports_labels_follow_the_page_and_its_text_stays_as_written(
    township, ct_modality, technologist_client
):
    """The PDF was always printed with Chinese labels, whatever the language of the page
    it was printed from."""
    consult = signed_consult(township, ct_modality)

    text, language = printed(technologist_client, consult)
    assert language == "zh-hans" and "影像所见" in text and "Findings" not in text

    technologist_client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    text, language = printed(technologist_client, consult)
    assert language == "en" and "Findings" in text and "Impression" in text and "影像所见" not in text
    assert FINDINGS.replace(" ", "") in text  # never translated

    # The Chinese copy, for the patient, from the English page.
    text, language = printed(technologist_client, consult, language="zh-hans")
    assert language == "zh-hans" and "影像所见" in text and "Findings" not in text
    assert technologist_client.get(f"/reading/{consult.uuid}/report.pdf", {"language": "fr"}).status_code == 404


def test_an_english_page_offers_the_chinese_copy_beside_the_print_button(township, ct_modality, technologist_client):
    consult = signed_consult(township, ct_modality)
    page = technologist_client.get(f"/consults/{consult.uuid}/").content.decode()
    assert 'id="report-pdf"' in page and 'id="report-pdf-zh"' not in page

    technologist_client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    page = technologist_client.get(f"/consults/{consult.uuid}/").content.decode()
    assert 'id="report-pdf"' in page and 'id="report-pdf-zh"' in page and "Chinese copy (PDF)" in page
    # The township's first print records the receipt: both buttons post, the copy names its language.
    assert 'name="language" value="zh-hans"' in page
