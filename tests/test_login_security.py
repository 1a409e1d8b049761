"""Logins in the audit trail, the lockout after repeated failures, and production settings
that pass `manage.py check --deploy`."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from django.test import Client
from django.urls import reverse
from django.utils import timezone

from facilities import services
from facilities.models import AuditEvent
from tests.factories import PASSWORD

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = "10.20.30.40"


def attempt(client: Client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ADDRESS)


def fail_times(client: Client, username: str, times: int) -> None:
    for _ in range(times):
        response = attempt(client, username, "wrong-password")
        assert response.status_code == 200


def test_a_successful_login_is_audited_with_the_address(technologist):
    response = attempt(Client(), technologist.username, PASSWORD)
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="facilities.login.succeeded", address=ADDRESS)
    assert event.actor == technologist
    assert event.actor_name == "tech_xuanwo"
    assert event.facility == technologist.facility
    assert event.object_id == str(technologist.uuid)


def test_a_failed_login_is_audited_with_the_name_tried_and_never_the_password(technologist):
    attempt(Client(), technologist.username, "my-secret-guess")
    event = AuditEvent.objects.get(action="facilities.login.failed")
    assert event.address == ADDRESS
    assert event.actor is None
    assert event.detail["username"] == "tech_xuanwo"
    assert "my-secret-guess" not in str(event.detail)


def test_a_logout_is_audited(technologist):
    client = Client()
    attempt(client, technologist.username, PASSWORD)
    response = client.post(reverse("logout"), REMOTE_ADDR=ADDRESS)
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="facilities.login.logged_out")
    assert event.actor == technologist
    assert event.address == ADDRESS


def test_after_five_failures_even_the_right_password_is_refused(technologist):
    client = Client()
    fail_times(client, technologist.username, 5)
    response = attempt(client, technologist.username, PASSWORD)
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert "登录失败次数过多" in response.content.decode()
    locked = AuditEvent.objects.get(action="facilities.login.locked")
    assert locked.detail["username"] == "tech_xuanwo"
    assert locked.address == ADDRESS
    assert not AuditEvent.objects.filter(action="facilities.login.succeeded", address=ADDRESS).exists()


def test_four_failures_do_not_lock_the_account(technologist):
    client = Client()
    fail_times(client, technologist.username, 4)
    assert attempt(client, technologist.username, PASSWORD).status_code == 302


def test_the_lockout_is_for_one_username_only(technologist, radiologist):
    client = Client()
    fail_times(client, technologist.username, 5)
    assert attempt(client, radiologist.username, PASSWORD).status_code == 302


def test_the_lockout_message_is_translated_to_english(technologist):
    client = Client()
    client.cookies["django_language"] = "en"
    fail_times(client, technologist.username, 5)
    response = client.post(
        reverse("login"), {"username": technologist.username, "password": PASSWORD}, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert "Too many failed logins" in response.content.decode()


def test_the_lockout_ends_when_the_window_has_passed(technologist):
    fail_times(Client(), technologist.username, 5)
    now = timezone.now()
    until = services.login_locked_until(technologist.username, now=now)
    assert until is not None
    assert now < until <= now + timedelta(minutes=15)
    assert services.login_locked_until(technologist.username, now=now + timedelta(minutes=16)) is None


def test_failures_older_than_the_window_do_not_count_at_the_login_page(technologist):
    # Audit rows cannot be changed, so the old failures are written with their time.
    long_ago = timezone.now() - timedelta(minutes=16)
    for _ in range(5):
        AuditEvent.objects.create(action="facilities.login.failed", at=long_ago, detail={"username": "tech_xuanwo"})
    assert attempt(Client(), technologist.username, PASSWORD).status_code == 302


def test_a_successful_login_clears_earlier_failures(technologist):
    client = Client()
    fail_times(client, technologist.username, 4)
    assert attempt(client, technologist.username, PASSWORD).status_code == 302
    client.post(reverse("logout"))
    fail_times(client, technologist.username, 4)
    assert attempt(client, technologist.username, PASSWORD).status_code == 302


def test_the_limits_come_from_settings(technologist, settings):
    settings.LOGIN_MAX_FAILURES = 2
    settings.LOGIN_LOCKOUT_MINUTES = 1
    fail_times(Client(), technologist.username, 2)
    now = timezone.now()
    assert services.login_locked_until(technologist.username, now=now) is not None
    assert services.login_locked_until(technologist.username, now=now + timedelta(minutes=2)) is None


def test_production_settings_pass_the_deploy_check(tmp_path):
    environment = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    environment.update(
        DEBUG="false",
        SECURE_HTTPS="true",
        SECRET_KEY=secrets.token_urlsafe(64),
        YUNYING_PRODUCTION="true",
        ALLOWED_HOSTS="pacs.example.cn",
        YUNYING_VAR_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_admin_login_page_is_locked_out_too(administrator):
    administrator.is_staff = True
    administrator.save(update_fields=["is_staff"])
    client = Client()
    fail_times(client, administrator.username, 5)
    response = client.post(
        reverse("admin:login"), {"username": administrator.username, "password": PASSWORD}, REMOTE_ADDR=ADDRESS
    )
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert "登录失败次数过多" in response.content.decode()
    assert AuditEvent.objects.filter(action="facilities.login.locked", address=ADDRESS).exists()
