"""API tokens (facilities.models.ApiToken, through django-rest-knox): made by their owner on
the "API tokens" page and shown once, kept only as a digest, expiring, revoked by the owner,
by a password change and by deactivation, read-only unless made to write, and audited."""

from __future__ import annotations

import re
from datetime import timedelta
from io import BytesIO

import pytest
from django.contrib.auth.hashers import make_password
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from facilities import services
from facilities.models import ApiToken, AuditEvent
from tests.dicomweb_support import token_for
from tests.factories import PASSWORD, make_dataset

NEW_PASSWORD = "lantern-river-quiet-58"
STUDIES = "/dicomweb/studies"


def make_token(client: Client, name: str = "OHIF", scope: str = "read", days: int = 90):
    return client.post(reverse("api_tokens"), {"name": name, "scope": scope, "days": days})


def secret_of(response) -> str:
    found = re.search(r'<code class="secret" id="token-secret">([^<]+)</code>', response.content.decode())
    assert found is not None, "the new token's secret is not on the page"
    return found[1]


def dicomweb(secret: str, scheme: str = "Token", path: str = STUDIES, **extra):
    return Client(HTTP_ACCEPT="*/*").get(path, HTTP_AUTHORIZATION=f"{scheme} {secret}", **extra)


def test_a_user_makes_a_token_sees_it_once_and_uses_it(technologist_client, technologist):
    response = make_token(technologist_client, "OHIF 阅片站")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = secret_of(response)
    assert secret.startswith("yy_") and len(secret) == 3 + 64
    assert dicomweb(secret).status_code in {200, 204}
    assert dicomweb(secret, "Bearer").status_code in {200, 204}
    page = technologist_client.get(reverse("api_tokens")).content.decode()
    assert secret not in page
    assert "OHIF 阅片站" in page
    assert secret[:15] in page  # its first characters tell it apart


def test_the_secret_is_stored_only_as_a_digest(technologist_client, technologist):
    secret = secret_of(make_token(technologist_client))
    token = ApiToken.objects.get(user=technologist)
    assert token.digest != secret and len(token.digest) == 128
    assert token.token_key == secret[:15]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608 (a model's own table)
        assert not any(secret in str(value) for row in cursor.fetchall() for value in row)


def test_making_a_token_is_audited_without_its_secret(technologist_client, technologist):
    secret = secret_of(make_token(technologist_client, "脚本", "write", 30))
    event = AuditEvent.objects.get(action=services.API_TOKEN_CREATED)
    assert event.actor == technologist
    assert event.facility == technologist.facility
    assert event.detail["token"] == secret[:15]
    assert (event.detail["name"], event.detail["scope"]) == ("脚本", "write")
    assert secret not in str(event.detail)


def test_a_token_expires(technologist_client, technologist):
    secret = secret_of(make_token(technologist_client, days=7))
    token = ApiToken.objects.get(user=technologist)
    assert timedelta(days=6, hours=23) < token.expiry - timezone.now() <= timedelta(days=7)
    ApiToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    response = dicomweb(secret)
    assert response.status_code == 401
    assert "Token" in response["WWW-Authenticate"]
    assert not ApiToken.objects.filter(pk=token.pk).exists()  # knox clears it
    assert secret[:15] not in technologist_client.get(reverse("api_tokens")).content.decode()


def test_the_longest_life_comes_from_settings(technologist_client, settings):
    settings.API_TOKEN_MAX_DAYS = 30
    response = make_token(technologist_client, days=90)
    assert "有效期不能超过 30 天" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_the_owner_revokes_a_token(technologist_client, technologist):
    secret = secret_of(make_token(technologist_client))
    token = ApiToken.objects.get(user=technologist)
    assert technologist_client.get(reverse("revoke_api_token", args=[token.uuid])).status_code == 405
    response = technologist_client.post(reverse("revoke_api_token", args=[token.uuid]))
    assert response.status_code == 302
    assert dicomweb(secret).status_code == 401
    event = AuditEvent.objects.get(action=services.API_TOKEN_REVOKED)
    assert (event.actor, event.object_id) == (technologist, str(token.uuid))
    assert event.detail["tokens"] == [secret[:15]]
    assert event.detail["reason"] == "revoked_by_owner"


def test_nobody_else_can_revoke_or_see_a_token(technologist_client, outsider_client, technologist):
    make_token(technologist_client, "我的令牌")
    token = ApiToken.objects.get(user=technologist)
    assert outsider_client.post(reverse("revoke_api_token", args=[token.uuid])).status_code == 404
    assert "我的令牌" not in outsider_client.get(reverse("api_tokens")).content.decode()
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_the_page_needs_a_sign_in(db):
    response = Client().get(reverse("api_tokens"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_password_change_revokes_every_token(technologist_client, technologist):
    secrets_ = [secret_of(make_token(technologist_client, f"t{n}")) for n in range(2)]
    response = technologist_client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert [dicomweb(secret).status_code for secret in secrets_] == [401, 401]
    event = AuditEvent.objects.get(action=services.API_TOKEN_REVOKED)
    assert event.detail["reason"] == "password_changed"
    assert sorted(event.detail["tokens"]) == sorted(secret[:15] for secret in secrets_)


def test_a_password_set_by_an_administrator_revokes_the_users_tokens(technologist, administrator):
    administrator.is_staff = True
    administrator.save(update_fields=["is_staff"])
    admin_client = Client()
    admin_client.force_login(administrator)
    secret = token_for(technologist)
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[technologist.pk]),
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302
    assert dicomweb(secret).status_code == 401


def test_any_saved_new_password_revokes_tokens(technologist):
    secret = token_for(technologist)
    technologist.set_password(NEW_PASSWORD)
    technologist.save(update_fields=["password"])
    assert dicomweb(secret).status_code == 401


def test_a_password_hash_upgraded_at_login_keeps_the_tokens(technologist, settings):
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    type(technologist).objects.filter(pk=technologist.pk).update(
        password=make_password(PASSWORD, hasher="pbkdf2_sha256")
    )
    secret = token_for(technologist)
    client = Client()
    assert client.post(reverse("login"), {"username": technologist.username, "password": PASSWORD}).status_code == 302
    technologist.refresh_from_db()
    assert technologist.password.startswith("md5$")  # upgraded at the login
    assert dicomweb(secret).status_code in {200, 204}


def test_deactivating_a_user_revokes_their_tokens(technologist):
    secret = token_for(technologist)
    technologist.is_active = False
    technologist.save()
    assert not ApiToken.objects.filter(user=technologist).exists()
    technologist.is_active = True
    technologist.save()
    assert dicomweb(secret).status_code == 401
    assert AuditEvent.objects.get(action=services.API_TOKEN_REVOKED).detail["reason"] == "deactivated"


def test_an_inactive_users_token_is_refused_even_if_one_was_left(technologist):
    secret = token_for(technologist)
    type(technologist).objects.filter(pk=technologist.pk).update(is_active=False)  # bypasses save()
    assert dicomweb(secret).status_code == 401


def test_a_read_only_token_cannot_store(technologist):
    secret = token_for(technologist, scope=ApiToken.Scope.READ)
    response = Client().post(
        STUDIES, b"", content_type="multipart/related; type=application/dicom", HTTP_AUTHORIZATION=f"Token {secret}"
    )
    assert response.status_code == 403
    assert "only read" in response.content.decode()
    assert dicomweb(secret).status_code in {200, 204}


def test_a_writing_token_passes_the_scope_check(technologist, ct_modality):
    secret = token_for(technologist, scope=ApiToken.Scope.WRITE)
    buffer = BytesIO()
    make_dataset().save_as(buffer, enforce_file_format=True)
    response = Client().post(
        STUDIES, buffer.getvalue(), content_type="application/dicom", HTTP_AUTHORIZATION=f"Token {secret}"
    )
    assert response.status_code not in {401, 403}


@pytest.mark.parametrize(
    "header", ["Token yy_abc\x00def", "Token yy_" + "é" * 10, "Bearer x y", "Token ", "Bearer ;drop"]
)
def test_a_malformed_token_is_a_401_not_a_500(db, header):
    response = Client().get(STUDIES, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_a_user_has_at_most_ten_tokens(technologist_client):
    for n in range(10):
        secret_of(make_token(technologist_client, f"t{n}"))
    response = make_token(technologist_client, "one more")
    assert "最多可有 10 个有效令牌" in response.content.decode()
    assert ApiToken.objects.count() == 10


def test_the_page_speaks_english_after_the_switch(technologist_client):
    technologist_client.post(reverse("set_language"), {"language": "en", "next": "/"})
    page = technologist_client.get(reverse("api_tokens")).content.decode()
    assert "API tokens" in page
    assert "shown only this once" in make_token(technologist_client).content.decode()
