"""Time limits and the per-minute check: limits by priority and modality, consults flagged
near their limit and escalated past it, critical findings (危急值) acknowledged or escalated.
Time passes by handing the check a later `now`; nothing sleeps."""

from __future__ import annotations

import email
import email.policy
import socket
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from consults import workflow
from consults.models import Consult, Escalation, Priority
from facilities.models import AuditEvent, ExamKind, User
from tests.factories import make_consult, make_shift, make_study, make_user


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


def reader(name: str, **fields) -> User:
    return make_user(
        User.Role.RADIOLOGIST, None, username=name, display_name=name, email=f"{name}@county.test", **fields
    )


@pytest.mark.parametrize(
    ("priority", "kind", "parts", "minutes"),
    [
        (Priority.EMERGENCY, ExamKind.DR, "胸部", 30),
        (Priority.EMERGENCY, ExamKind.CT, "胸部", 60),
        (Priority.EMERGENCY, ExamKind.CT, "头颅", 30),
        (Priority.URGENT, ExamKind.DR, "胸部", 60),
        (Priority.URGENT, ExamKind.CT, "腹部", 120),
        (Priority.URGENT, ExamKind.CT, "HEAD", 60),
        (Priority.ROUTINE, ExamKind.DR, "腰椎", 120),
        (Priority.ROUTINE, ExamKind.CT, "胸部", 240),
    ],
)
def test_the_time_limit_depends_on_priority_and_modality(township, priority, kind, parts, minutes):
    consult = make_consult(township, kind=kind, priority=priority, body_part_names=parts)
    assert workflow.time_limit(consult) == timedelta(minutes=minutes)


def test_a_head_ct_is_recognised_from_its_series_body_part(township, ct_modality):
    study = make_study(township, ct_modality)
    study.series.update(body_part_examined="HEAD")
    consult = make_consult(township, study, priority=Priority.EMERGENCY)
    assert workflow.time_limit(consult) == timedelta(minutes=30)


def test_the_time_limits_come_from_settings(settings, township):
    settings.CONSULT_TIME_LIMITS = {**settings.CONSULT_TIME_LIMITS, "routine": {"DR": 90, "CT": 180}}
    consult = make_consult(township, kind=ExamKind.DR)
    assert workflow.time_limit(consult) == timedelta(minutes=90)


def test_a_consult_near_its_limit_is_flagged_and_one_past_it_escalated_to_the_duty_lead(township, now):
    holder, lead = reader("holder"), reader("lead", is_senior=True)
    make_shift(holder, now - timedelta(hours=1))
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    consult = make_consult(township, kind=ExamKind.DR, arrived_at=now)
    workflow.claim_consult(consult, holder, now)  # a claim opens the consult

    assert workflow.check_consult_deadlines(now + timedelta(minutes=60)).flagged == []
    assert workflow.check_consult_deadlines(now + timedelta(minutes=97)).flagged == [consult.pk]
    consult.refresh_from_db()
    assert consult.flagged_at == now + timedelta(minutes=97)
    assert consult.due_at == now + timedelta(minutes=120)
    assert consult.escalated_at is None

    result = workflow.check_consult_deadlines(now + timedelta(minutes=121))

    assert result.escalated == [consult.pk]
    consult.refresh_from_db()
    assert consult.escalated_at == now + timedelta(minutes=121)
    # Being read, it stays with its reader; the lead is told.
    assert consult.radiologist == holder
    escalation = Escalation.objects.get(consult=consult)
    assert (escalation.reason, escalation.to_user, escalation.reassigned) == (
        Escalation.Reason.TIME_LIMIT,
        lead,
        False,
    )
    assert AuditEvent.objects.filter(action="consults.consult.escalated", object_id=str(consult.uuid)).count() == 1
    assert workflow.check_consult_deadlines(now + timedelta(minutes=125)).escalated == []
    assert Escalation.objects.filter(consult=consult).count() == 1


def test_an_unopened_consult_past_its_limit_is_reassigned_to_another_reader(township, now):
    slow, other = reader("slow"), reader("other")
    make_shift(slow, now - timedelta(hours=1))
    consult = make_consult(township, kind=ExamKind.CT, priority=Priority.EMERGENCY, arrived_at=now)
    assert workflow.assign_consult(consult, now) == slow
    make_shift(other, now + timedelta(minutes=10))

    workflow.check_consult_deadlines(now + timedelta(minutes=61))

    consult.refresh_from_db()
    assert consult.radiologist == other
    escalation = Escalation.objects.get(consult=consult)
    assert escalation.reassigned and escalation.from_radiologist == slow and escalation.to_user == other


def test_the_check_assigns_waiting_consults_most_urgent_first(township, now):
    only = reader("only")
    make_shift(only, now - timedelta(hours=1))
    routine = make_consult(township, kind=ExamKind.DR, arrived_at=now - timedelta(minutes=20))
    emergency = make_consult(township, kind=ExamKind.DR, priority=Priority.EMERGENCY, arrived_at=now)

    result = workflow.check_consult_deadlines(now)

    assert result.assigned == [emergency.pk, routine.pk]
    assert set(Consult.objects.values_list("radiologist", flat=True)) == {only.pk}


def test_with_auto_assignment_off_consults_wait_to_be_claimed(settings, township, now):
    settings.CONSULT_AUTO_ASSIGN = False
    make_shift(reader("idle"), now - timedelta(hours=1))
    consult = make_consult(township, kind=ExamKind.DR, arrived_at=now)

    assert workflow.check_consult_deadlines(now).assigned == []
    consult.refresh_from_db()
    assert consult.status == Consult.Status.ARRIVED


def test_a_critical_finding_acknowledged_in_time_is_not_escalated(
    township, technologist, now, mailoutbox, django_capture_on_commit_callbacks
):
    township.alert_email = "yizhen@xuanwo.test"
    township.save()
    li = reader("li")
    consult = make_consult(township, kind=ExamKind.CT, arrived_at=now - timedelta(minutes=10))
    workflow.claim_consult(consult, li, now)

    with django_capture_on_commit_callbacks(execute=True):
        finding = workflow.flag_critical(consult, li, "左侧大量气胸，纵隔右移。", now)

    assert [m.to for m in mailoutbox] == [["yizhen@xuanwo.test"]]
    assert "危急值" in mailoutbox[0].subject
    assert "左侧大量气胸" in mailoutbox[0].body
    assert list(workflow.open_critical_findings(township.pk)) == [finding]

    workflow.acknowledge_critical(finding, technologist, now + timedelta(minutes=4))

    finding.refresh_from_db()
    consult.refresh_from_db()
    assert finding.acknowledged_by == technologist
    assert finding.acknowledged_at == now + timedelta(minutes=4)
    assert consult.acknowledged_at == now + timedelta(minutes=4)
    assert list(workflow.open_critical_findings(township.pk)) == []
    assert workflow.check_consult_deadlines(now + timedelta(minutes=20)).critical_escalated == []
    assert finding.emailed_at is not None


def test_a_critical_finding_not_acknowledged_in_15_minutes_escalates_to_the_duty_lead(
    township, technologist, now, mailoutbox, django_capture_on_commit_callbacks
):
    li, lead = reader("li"), reader("lead", is_senior=True)
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    consult = make_consult(township, kind=ExamKind.CT, arrived_at=now - timedelta(minutes=10))
    workflow.claim_consult(consult, li, now)
    finding = workflow.flag_critical(consult, li, "急性硬膜外血肿。", now)
    assert mailoutbox == []  # the township has no alert address

    assert workflow.check_consult_deadlines(now + timedelta(minutes=14)).critical_escalated == []
    with django_capture_on_commit_callbacks(execute=True):
        result = workflow.check_consult_deadlines(now + timedelta(minutes=15))
    assert result.critical_escalated == [finding.pk]

    finding.refresh_from_db()
    assert finding.escalated_at == now + timedelta(minutes=15)
    escalation = Escalation.objects.get(critical_finding=finding)
    assert escalation.reason == Escalation.Reason.CRITICAL_UNACKNOWLEDGED
    assert escalation.to_user == lead
    assert [m.to for m in mailoutbox] == [["lead@county.test"]]
    assert AuditEvent.objects.filter(action="consults.critical.escalated").count() == 1
    assert workflow.check_consult_deadlines(now + timedelta(minutes=30)).critical_escalated == []

    # Late acknowledgement is still recorded.
    workflow.acknowledge_critical(finding, technologist, now + timedelta(minutes=40))
    finding.refresh_from_db()
    assert finding.acknowledged_at == now + timedelta(minutes=40)


def test_only_the_township_acknowledges_its_critical_findings(township, outsider, now):
    li = reader("li")
    consult = make_consult(township, kind=ExamKind.CT, arrived_at=now)
    workflow.claim_consult(consult, li, now)
    finding = workflow.flag_critical(consult, li, "主动脉夹层。", now)

    for user in (outsider, li):
        with pytest.raises(workflow.NotAllowed):
            workflow.acknowledge_critical(finding, user, now)
    finding.refresh_from_db()
    assert finding.acknowledged_at is None


def test_another_reader_cannot_flag_a_critical_finding_on_a_locked_consult(township, now):
    holder, other = reader("holder"), reader("other")
    consult = make_consult(township, kind=ExamKind.CT, arrived_at=now)
    workflow.claim_consult(consult, holder, now)
    with pytest.raises(workflow.NotAllowed):
        workflow.flag_critical(consult, other, "别人的危急值", now)


# --- E-mail to whoever an escalation went to ------------------------------------------------


def test_a_consult_past_its_limit_emails_the_duty_lead_once(
    township, now, mailoutbox, django_capture_on_commit_callbacks
):
    holder, lead = reader("holder"), reader("lead", is_senior=True)
    make_shift(holder, now - timedelta(hours=1))
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    consult = make_consult(township, kind=ExamKind.DR, priority=Priority.EMERGENCY, arrived_at=now)
    workflow.claim_consult(consult, holder, now)  # a claim opens the consult

    with django_capture_on_commit_callbacks(execute=True):
        workflow.check_consult_deadlines(now + timedelta(minutes=31))
    with django_capture_on_commit_callbacks(execute=True):
        workflow.check_consult_deadlines(now + timedelta(minutes=40))

    (message,) = mailoutbox
    assert message.to == ["lead@county.test"]
    assert message.subject == "【会诊超时】漩涡 急诊 DR 会诊"
    assert "已超过诊断时限" in message.body
    assert "目前诊断医师：holder" in message.body
    assert f"/reading/{consult.uuid}/" in message.body
    escalation = Escalation.objects.get(consult=consult)
    assert escalation.emailed_at is not None
    assert AuditEvent.objects.filter(action="consults.escalation.emailed", object_id=str(consult.uuid)).count() == 1


def test_an_unopened_consult_past_its_limit_emails_its_new_reader(
    township, now, mailoutbox, django_capture_on_commit_callbacks
):
    slow, other = reader("slow"), reader("other")
    make_shift(slow, now - timedelta(hours=1))
    consult = make_consult(township, kind=ExamKind.CT, priority=Priority.EMERGENCY, arrived_at=now)
    workflow.assign_consult(consult, now)
    make_shift(other, now + timedelta(minutes=10))

    with django_capture_on_commit_callbacks(execute=True):
        workflow.check_consult_deadlines(now + timedelta(minutes=61))

    (message,) = mailoutbox
    assert message.to == ["other@county.test"]
    assert message.subject.startswith("【超时转派】")
    assert "原诊断医师 slow 尚未阅片，现转给您" in message.body


def test_a_reader_gone_off_duty_hands_on_with_an_email_to_the_new_reader(
    township, now, mailoutbox, django_capture_on_commit_callbacks
):
    early, late = reader("early"), reader("late")
    make_shift(early, now - timedelta(hours=8), hours=8)
    make_shift(late, now - timedelta(minutes=5))
    consult = make_consult(township, kind=ExamKind.CT, arrived_at=now - timedelta(minutes=30))
    workflow.claim_consult(consult, early, now - timedelta(minutes=20))

    with django_capture_on_commit_callbacks(execute=True):
        workflow.check_consult_deadlines(now + timedelta(minutes=1))

    consult.refresh_from_db()
    assert consult.radiologist == late
    (message,) = mailoutbox
    assert message.to == ["late@county.test"]
    assert "原诊断医师 early 已下班" in message.body


def test_a_lead_without_an_address_gets_no_mail_and_the_escalation_still_stands(
    township, now, mailoutbox, django_capture_on_commit_callbacks
):
    lead = make_user(User.Role.RADIOLOGIST, None, username="nomail", is_senior=True)
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    consult = make_consult(township, kind=ExamKind.DR, arrived_at=now)
    Consult.objects.filter(pk=consult.pk).update(status=Consult.Status.OPENED)

    with django_capture_on_commit_callbacks(execute=True):
        workflow.check_consult_deadlines(now + timedelta(minutes=121))

    assert mailoutbox == []
    assert Escalation.objects.get(consult=consult).to_user == lead


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_mail_server_that_is_down_does_not_stop_the_check(
    settings, township, technologist, now, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", _free_port()
    lead = reader("lead", is_senior=True)
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    late = make_consult(township, kind=ExamKind.DR, arrived_at=now)
    Consult.objects.filter(pk=late.pk).update(status=Consult.Status.OPENED, radiologist=lead)
    finding = workflow.flag_critical(late, lead, "张力性气胸。", now)

    with django_capture_on_commit_callbacks(execute=True):
        result = workflow.check_consult_deadlines(now + timedelta(minutes=121))

    assert result.escalated == [late.pk]
    assert result.critical_escalated == [finding.pk]
    assert not Escalation.objects.filter(emailed_at__isnull=False).exists()
    failures = AuditEvent.objects.filter(action="consults.escalation.email_failed")
    assert sorted(event.detail["reason"] for event in failures) == ["critical", "time_limit"]
    assert "ConnectionRefusedError" in failures.first().detail["error"]


class Mailbox:
    """What an SMTP server on 127.0.0.1 received (aiosmtpd's handler contract)."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"


def test_an_escalation_mail_reaches_a_real_smtp_server(settings, township, now, django_capture_on_commit_callbacks):
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
        settings.DEFAULT_FROM_EMAIL = "yunying@county.test"
        lead = reader("lead", is_senior=True)
        make_shift(lead, now - timedelta(hours=1), is_lead=True)
        consult = make_consult(township, kind=ExamKind.CT, priority=Priority.URGENT, arrived_at=now)
        Consult.objects.filter(pk=consult.pk).update(status=Consult.Status.OPENED)

        with django_capture_on_commit_callbacks(execute=True):
            workflow.check_consult_deadlines(now + timedelta(minutes=121))
    finally:
        smtp.stop()

    (envelope,) = mailbox.envelopes
    assert envelope.mail_from == "yunying@county.test"
    assert envelope.rcpt_tos == ["lead@county.test"]
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert message["Subject"] == "【会诊超时】漩涡 加急 CT 会诊"
    assert "目前诊断医师：无人领取" in message.get_content()
    assert Escalation.objects.get(consult=consult).emailed_at is not None


def test_a_time_limit_can_be_changed_cell_by_cell_from_the_environment(monkeypatch):
    from cloudpacs.env import ConfigError, env_table

    default = {"routine": {"DR": 120, "CT": 240}}
    monkeypatch.setenv("LIMITS", "routine.CT=180, emergency.CT_HEAD=20")
    table = env_table("LIMITS", default, rows={"routine", "emergency"}, columns={"DR", "CT", "CT_HEAD"})
    assert table == {"routine": {"DR": 120, "CT": 180}, "emergency": {"CT_HEAD": 20}}
    assert default == {"routine": {"DR": 120, "CT": 240}}
    for bad in ("routine.MR=30", "soon.CT=30", "routine.CT=half", "routine.CT=0"):
        monkeypatch.setenv("LIMITS", bad)
        with pytest.raises(ConfigError, match="LIMITS"):
            env_table("LIMITS", default, rows={"routine"}, columns={"DR", "CT"})
