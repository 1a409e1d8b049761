"""Logins in the audit trail, the lockout after repeated failures, production settings
that pass `manage.py check --deploy`, sessions that end when idle, and the password rules
wherever a password is set."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import password_validation
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from facilities import services
from facilities.demo import demo_password
from facilities.middleware import RENEWED_AT
from facilities.models import AuditEvent, LoginThrottle, User
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
    fail_times(Client(), technologist.username, 5)
    LoginThrottle.objects.update(window_started_at=timezone.now() - timedelta(minutes=16))
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


# --- Sessions end when idle ---------------------------------------------------------------


def session_row(client: Client) -> Session:
    return Session.objects.get(session_key=client.session.session_key)


def test_a_session_lasts_thirty_idle_minutes_by_default(technologist_client, settings):
    assert settings.SESSION_IDLE_MINUTES == 30
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    technologist_client.get(reverse("home"))
    left = session_row(technologist_client).expire_date - timezone.now()
    assert timedelta(minutes=29) < left <= timedelta(minutes=30)


def test_an_idle_session_is_signed_out(technologist_client):
    assert technologist_client.get(reverse("home")).status_code == 302
    Session.objects.filter(pk=technologist_client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    response = technologist_client.get(reverse("home"))
    assert response["Location"].startswith(reverse("login"))


def test_working_pushes_the_end_of_the_session_forward(technologist_client):
    session = technologist_client.session
    session[RENEWED_AT] = int(time.time()) - 2 * 60  # last renewed two minutes ago
    session.save()
    Session.objects.filter(pk=session.session_key).update(expire_date=timezone.now() + timedelta(minutes=28))
    assert technologist_client.get(reverse("home")).status_code == 302
    left = session_row(technologist_client).expire_date - timezone.now()
    assert left > timedelta(minutes=29)


def test_requests_within_a_minute_do_not_rewrite_the_session(technologist_client):
    technologist_client.get(reverse("home"))
    soon = timezone.now() + timedelta(minutes=10)
    Session.objects.filter(pk=technologist_client.session.session_key).update(expire_date=soon)
    technologist_client.get(reverse("home"))
    assert session_row(technologist_client).expire_date == soon


def test_the_idle_limit_comes_from_the_environment(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    environment.update(SESSION_IDLE_MINUTES="45", YUNYING_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.SESSION_COOKIE_AGE)",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "2700", result.stderr


# --- Passwords ----------------------------------------------------------------------------

NEW_PASSWORD = "lantern-river-quiet-58"


def change_password(client: Client, old: str, new: str, **extra):
    return client.post(
        reverse("password_change"), {"old_password": old, "new_password1": new, "new_password2": new}, **extra
    )


def test_a_user_changes_their_own_password_and_stays_signed_in(technologist_client, technologist):
    page = technologist_client.get(reverse("home"), follow=True).content.decode()
    assert reverse("password_change") in page
    response = change_password(technologist_client, PASSWORD, NEW_PASSWORD, REMOTE_ADDR=ADDRESS)
    assert response.status_code == 302
    assert response["Location"] == reverse("password_change_done")
    technologist.refresh_from_db()
    assert technologist.check_password(NEW_PASSWORD)
    assert technologist_client.get(reverse("password_change_done")).status_code == 200
    event = AuditEvent.objects.get(action="facilities.password.changed")
    assert (event.actor, event.address, event.object_id) == (technologist, ADDRESS, str(technologist.uuid))
    assert NEW_PASSWORD not in str(event.detail)


@pytest.mark.parametrize(
    ("weak", "rule"),
    [
        ("short-pw1", "至少需要 10 个字符"),
        ("4096819203", "只包含数字"),
        ("password123", "太常见"),
        ("tech_xuanwo9", "太相似"),
    ],
)
def test_the_change_password_page_applies_the_password_rules(technologist_client, technologist, weak, rule):
    response = change_password(technologist_client, PASSWORD, weak)
    assert response.status_code == 200
    assert rule in response.content.decode()
    technologist.refresh_from_db()
    assert technologist.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="facilities.password.changed").exists()


def test_the_old_password_must_be_given(technologist_client, technologist):
    assert change_password(technologist_client, "not-my-password", NEW_PASSWORD).status_code == 200
    technologist.refresh_from_db()
    assert technologist.check_password(PASSWORD)


def test_the_admins_own_password_page_is_audited_too(administrator):
    administrator.is_staff = True
    administrator.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(administrator)
    response = client.post(
        reverse("admin:password_change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        REMOTE_ADDR=ADDRESS,
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="facilities.password.changed")
    assert (event.actor, event.address, event.detail["via"]) == (administrator, ADDRESS, "admin")
    weak = client.post(
        reverse("admin:password_change"),
        {"old_password": NEW_PASSWORD, "new_password1": "12345678", "new_password2": "12345678"},
    )
    assert weak.status_code == 200
    assert AuditEvent.objects.filter(action="facilities.password.changed").count() == 1


def test_the_password_rules_are_length_ten_common_numeric_and_similarity(settings):
    rules = {v["NAME"].rsplit(".", 1)[1]: v.get("OPTIONS", {}) for v in settings.AUTH_PASSWORD_VALIDATORS}
    assert rules == {
        "UserAttributeSimilarityValidator": {},
        "MinimumLengthValidator": {"min_length": 10},
        "CommonPasswordValidator": {},
        "NumericPasswordValidator": {},
    }


@pytest.mark.parametrize(
    ("role", "username"),
    [
        (User.Role.TECHNOLOGIST, "tech_xuanwo"),
        (User.Role.RADIOLOGIST, "dr_li"),
        (User.Role.ADMINISTRATOR, "admin"),
    ],
)
def test_the_demo_passwords_satisfy_the_password_rules(role, username):
    password_validation.validate_password(demo_password(role), User(username=username, role=role))


def test_the_length_rule_speaks_english_after_the_switch(technologist_client):
    technologist_client.post(reverse("set_language"), {"language": "en", "next": "/"})
    response = change_password(technologist_client, PASSWORD, "short-pw1")
    assert "It must contain at least 10 characters." in response.content.decode()
