"""The mail outbox of alerts (critical findings, escalations): a row written with the step,
sent once, retried with a growing delay while the mail server is down, and sent by the
periodic run when the task that was to send it never reached a worker (a broker that is
stopped or frozen). Real SMTP (aiosmtpd) and a real redis-server; time for the retries is
handed in as `now`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from cloudpacs.celery import app
from cloudpacs.publish import publish
from consults import notifications, tasks, workflow
from consults.models import Consult, CriticalFinding, Escalation, Notification
from facilities.models import AuditEvent, ExamKind, User
from tests.factories import make_consult, make_shift, make_user
from tests.processes import SmtpServer


@pytest.fixture
def smtp(settings) -> Iterator[SmtpServer]:
    server = SmtpServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_TIMEOUT = 5
    yield server
    server.stop()


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


@pytest.fixture
def reading(township, now) -> tuple[Consult, User]:
    township.alert_email = "yizhen@xuanwo.test"
    township.save()
    li = make_user(User.Role.RADIOLOGIST, None, username="li", display_name="李医生", email="li@county.test")
    consult = make_consult(township, kind=ExamKind.CT, arrived_at=now - timedelta(minutes=5))
    workflow.claim_consult(consult, li, now)
    return consult, li


def broker_at(monkeypatch, url: str) -> None:
    """Tasks go to the broker at `url` from this process, as from a web server with one.
    Celery reads CELERY_BROKER_URL from the environment before its configuration (CI sets it)."""
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setitem(app.conf, "broker_url", url)
    monkeypatch.setenv("CELERY_BROKER_URL", url)


def test_a_critical_alert_is_a_row_in_the_outbox_sent_exactly_once(
    reading, now, smtp, django_capture_on_commit_callbacks
):
    consult, li = reading
    smtp.start()
    with django_capture_on_commit_callbacks(execute=True):
        finding = workflow.flag_critical(consult, li, "左侧大量气胸。", now)

    row = Notification.objects.get(critical_finding=finding)
    assert (row.kind, row.recipient, row.status, row.attempts) == ("critical", "yizhen@xuanwo.test", "sent", 1)
    assert smtp.recipients() == [["yizhen@xuanwo.test"]]
    assert CriticalFinding.objects.get(pk=finding.pk).emailed_at == row.sent_at
    # The task once more, and the periodic run: nothing is sent twice.
    tasks.send_notification(row.pk)
    assert notifications.send_due(timezone.now() + timedelta(hours=1)) == {}
    assert smtp.recipients() == [["yizhen@xuanwo.test"]]
    actions = AuditEvent.objects.filter(object_id=str(consult.uuid)).order_by("id").values_list("action", flat=True)
    assert [a for a in actions if a.startswith("consults.critical.email")] == [
        "consults.critical.email_queued",
        "consults.critical.emailed",
    ]


def test_an_alert_waits_while_the_mail_server_is_down_and_goes_once_it_is_up(
    reading, now, smtp, django_capture_on_commit_callbacks, settings
):
    consult, li = reading
    settings.MAIL_RETRY_SECONDS = 30
    with django_capture_on_commit_callbacks(execute=True):
        finding = workflow.flag_critical(consult, li, "主动脉夹层。", now)
    row = Notification.objects.get(critical_finding=finding)
    assert (row.status, row.attempts) == ("retrying", 1)
    assert "ConnectionRefusedError" in row.last_error
    first_retry = row.next_attempt_at - row.last_attempt_at
    assert first_retry == timedelta(seconds=30)

    # Not due yet: the periodic run leaves it.
    assert notifications.send_due(row.last_attempt_at + timedelta(seconds=29)) == {}
    # Due, and the server still down: the delay doubles.
    later = row.last_attempt_at + timedelta(seconds=31)
    assert notifications.send_due(later) == {row.pk: "retrying"}
    row.refresh_from_db()
    assert row.next_attempt_at - later == timedelta(seconds=60)

    smtp.start()
    assert notifications.send_due(later + timedelta(seconds=61)) == {row.pk: "sent"}
    assert notifications.send_due(later + timedelta(hours=2)) == {}
    assert smtp.recipients() == [["yizhen@xuanwo.test"]]
    failures = AuditEvent.objects.filter(action="consults.critical.email_failed")
    assert [(e.detail["attempt"], e.detail["final"]) for e in failures.order_by("id")] == [(1, False), (2, False)]
    assert AuditEvent.objects.filter(action="consults.critical.emailed").count() == 1


def test_an_alert_whose_attempts_run_out_is_marked_failed(reading, now, smtp, settings):
    consult, li = reading
    settings.MAIL_MAX_ATTEMPTS = 2
    finding = workflow.flag_critical(consult, li, "张力性气胸。", now)
    row = Notification.objects.get(critical_finding=finding)
    notifications.send_due(timezone.now())
    notifications.send_due(timezone.now() + timedelta(hours=1))
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", 2)
    assert notifications.send_due(timezone.now() + timedelta(days=1)) == {}
    failures = AuditEvent.objects.filter(action="consults.critical.email_failed").order_by("id")
    assert [event.detail["final"] for event in failures] == [False, True]
    assert notifications.oldest_unsent() == row


def test_a_row_being_sent_is_not_taken_twice_but_one_left_by_a_dead_process_is(reading, now, smtp):
    consult, li = reading
    smtp.start()
    finding = workflow.flag_critical(consult, li, "急性硬膜外血肿。", now)
    row = Notification.objects.get(critical_finding=finding)
    started = timezone.now()
    Notification.objects.filter(pk=row.pk).update(status="sending", claimed_at=started, attempts=1)
    # Another worker is on it: neither the task nor the periodic run touches it.
    assert notifications.send(row.pk, started + timedelta(seconds=5)) is None
    assert notifications.send_due(started + timedelta(seconds=5)) == {}
    # Its process died mid-attempt: after the lease the row is taken up again, once.
    later = started + timedelta(minutes=5)
    assert notifications.send_due(later) == {row.pk: "sent"}
    assert notifications.send_due(later) == {}
    assert smtp.recipients() == [["yizhen@xuanwo.test"]]


def test_an_escalation_mail_is_an_outbox_row_too(township, now, smtp, django_capture_on_commit_callbacks):
    lead = make_user(User.Role.RADIOLOGIST, None, username="lead", email="lead@county.test", is_senior=True)
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    consult = make_consult(township, kind=ExamKind.DR, arrived_at=now)
    Consult.objects.filter(pk=consult.pk).update(status=Consult.Status.OPENED)
    with django_capture_on_commit_callbacks(execute=True):
        workflow.check_consult_deadlines(now + timedelta(minutes=121))
    escalation = Escalation.objects.get(consult=consult)
    row = Notification.objects.get(escalation=escalation)
    assert (row.kind, row.recipient, row.status) == ("escalation", "lead@county.test", "retrying")

    smtp.start()
    assert notifications.send_due(timezone.now() + timedelta(minutes=1)) == {row.pk: "sent"}
    assert smtp.recipients() == [["lead@county.test"]]
    assert Escalation.objects.get(pk=escalation.pk).emailed_at is not None


# --- The broker stopped or frozen -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_stopped_flagging_and_escalating_raise_nothing_and_the_periodic_run_sends(
    reading, now, smtp, monkeypatch, caplog, private_redis
):
    consult, li = reading
    lead = make_user(User.Role.RADIOLOGIST, None, username="lead", email="lead@county.test", is_senior=True)
    make_shift(lead, now - timedelta(hours=1), is_lead=True)
    smtp.start()
    broker_at(monkeypatch, private_redis.url)
    private_redis.kill()
    caplog.set_level(logging.WARNING, logger="cloudpacs")

    # transaction=True: the on-commit publish runs for real, against a refused connection.
    finding = workflow.flag_critical(consult, li, "左侧大量气胸。", now)
    workflow.check_consult_deadlines(now + timedelta(minutes=20))

    assert "the broker refused it" in caplog.text
    rows = Notification.objects.order_by("id")
    assert [(r.kind, r.status, r.attempts) for r in rows] == [("critical", "pending", 0), ("escalation", "pending", 0)]
    assert smtp.recipients() == []
    assert Escalation.objects.get(critical_finding=finding).to_user == lead

    # The periodic run (beat's, once the broker is back; the ticker's without one).
    assert set(notifications.send_due().values()) == {"sent"}
    assert sorted(smtp.recipients()) == [["lead@county.test"], ["yizhen@xuanwo.test"]]
    assert notifications.send_due(timezone.now() + timedelta(hours=1)) == {}
    assert notifications.oldest_unsent() is None


@pytest.mark.django_db(transaction=True)
def test_a_publish_to_a_frozen_redis_gives_up_within_the_broker_timeout(monkeypatch, settings, private_redis, caplog):
    settings.BROKER_TIMEOUT = 1.0
    broker_at(monkeypatch, private_redis.url)
    assert publish(tasks.send_due_notifications) is True

    private_redis.freeze()
    caplog.set_level(logging.WARNING, logger="cloudpacs")
    started = time.monotonic()
    assert publish(tasks.send_due_notifications) is False
    waited = time.monotonic() - started
    # Unbounded without the socket timeouts; kombu and redis-py would stack several of them
    # but for max_retries=0, and the attempt's own deadline holds the caller to one.
    assert waited < 1.5, waited
    assert "task consults.tasks.send_due_notifications()" in caplog.text
