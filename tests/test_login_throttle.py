"""The limits on password guessing (docs/operations.md, "Sign-in"): counted before the
password is checked, so parallel guesses cannot outrun them; counted per client address as
well as per username, so a stranger who knows a username cannot keep its owner out; and the
old-password field of the password-change forms counted like a login."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from facilities import services
from facilities.models import AuditEvent, LoginThrottle
from tests.factories import PASSWORD

ATTACKER = "198.51.100.66"
OWNER = "10.20.30.40"
NEW_PASSWORD = "lantern-river-quiet-58"


def attempt(client: Client, username: str, password: str, address: str = ATTACKER, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **extra)


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def password_checks(username: str) -> int:
    """How many times the password of `username` was actually checked and found wrong."""
    return AuditEvent.objects.filter(action=services.LOGIN_FAILED, detail__username=username).count()


# --- Parallel guesses, through a real server ---------------------------------------------------


def parallel_logins(url: str, attempts: list[tuple[str, str, dict[str, str]]]) -> list[requests.Response]:
    """POST every (username, password, headers) to the login page of `url` at once, each
    from its own HTTP session and with its own database connection on the server side."""
    first = requests.get(f"{url}/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', first.text)
    assert token is not None
    cookies = {"csrftoken": first.cookies["csrftoken"]}

    def post(item: tuple[str, str, dict[str, str]]) -> requests.Response:
        username, password, headers = item
        return requests.post(
            f"{url}/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
            cookies=cookies,
            headers=headers,
            allow_redirects=False,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        return list(pool.map(post, attempts))


@pytest.mark.django_db(transaction=True)
def test_forty_parallel_guesses_check_the_password_at_most_five_times(live_server, technologist):
    responses = parallel_logins(live_server.url, [(technologist.username, f"guess-{n}", {}) for n in range(40)])
    assert {response.status_code for response in responses} == {200}
    assert password_checks(technologist.username) <= 5
    refused = [response for response in responses if "登录失败次数过多" in response.text]
    assert len(refused) >= 35
    assert AuditEvent.objects.filter(action=services.LOGIN_LOCKED).count() == len(refused)


@pytest.mark.django_db(transaction=True)
def test_parallel_guesses_from_forty_addresses_still_check_the_password_at_most_five_times(
    live_server, technologist, settings
):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    guesses = [(technologist.username, f"guess-{n}", {"X-Forwarded-For": f"203.0.113.{n + 1}"}) for n in range(40)]
    responses = parallel_logins(live_server.url, guesses)
    assert {response.status_code for response in responses} == {200}
    assert password_checks(technologist.username) <= 5
    addresses = set(AuditEvent.objects.filter(action=services.LOGIN_FAILED).values_list("address", flat=True))
    assert addresses <= {f"203.0.113.{n + 1}" for n in range(40)}


@pytest.mark.django_db(transaction=True)
def test_parallel_guesses_at_forty_names_from_one_address_stop_at_the_address_limit(live_server, settings):
    responses = parallel_logins(live_server.url, [(f"someone{n}", "guess", {}) for n in range(40)])
    assert {response.status_code for response in responses} == {200}
    checked = AuditEvent.objects.filter(action=services.LOGIN_FAILED).count()
    assert checked <= settings.LOGIN_ADDRESS_MAX_FAILURES == 20
    assert sum("来自本地址的登录失败次数过多" in response.text for response in responses) >= 20


# --- A stranger cannot keep the owner out ------------------------------------------------------


def test_a_stranger_who_locks_a_name_does_not_keep_its_owner_out_of_their_own_browser(technologist):
    owner = Client()
    assert attempt(owner, technologist.username, PASSWORD, OWNER).status_code == 302
    owner.post(reverse("logout"))
    assert services.DEVICE_COOKIE in owner.cookies

    stranger = Client()
    for _ in range(12):
        attempt(stranger, technologist.username, "guess")
    assert services.login_locked_until(technologist.username) is not None
    assert "登录失败次数过多" in attempt(stranger, technologist.username, PASSWORD).content.decode()
    assert not signed_in(stranger)

    # Same address as the stranger, even: the owner's browser has its own count.
    assert attempt(owner, technologist.username, PASSWORD, ATTACKER).status_code == 302
    assert signed_in(owner)


def test_a_new_browser_of_the_owner_is_locked_with_the_name_until_the_window_passes(technologist):
    stranger = Client()
    for _ in range(5):
        attempt(stranger, technologist.username, "guess")
    response = attempt(Client(), technologist.username, PASSWORD, OWNER)
    assert "登录失败次数过多" in response.content.decode()
    LoginThrottle.objects.update(window_started_at=timezone.now() - timedelta(minutes=16))
    assert attempt(Client(), technologist.username, PASSWORD, OWNER).status_code == 302


def test_a_remembered_browser_has_a_limit_of_its_own(technologist):
    # A device cookie, even a stolen one, gives five guesses a window, not more.
    browser = Client()
    attempt(browser, technologist.username, PASSWORD, OWNER)
    browser.post(reverse("logout"))
    for _ in range(5):
        assert attempt(browser, technologist.username, "guess", OWNER).status_code == 200
    response = attempt(browser, technologist.username, PASSWORD, OWNER)
    assert "登录失败次数过多" in response.content.decode()
    assert not signed_in(browser)
    assert password_checks(technologist.username) == 5


def test_a_browser_remembered_for_one_user_does_not_help_another(technologist, radiologist):
    browser = Client()
    attempt(browser, technologist.username, PASSWORD, OWNER)
    browser.post(reverse("logout"))
    for _ in range(5):
        attempt(Client(), radiologist.username, "guess")
    assert "登录失败次数过多" in attempt(browser, radiologist.username, PASSWORD, OWNER).content.decode()


def test_a_forged_device_cookie_is_ignored(technologist):
    for _ in range(5):
        attempt(Client(), technologist.username, "guess")
    forged = Client()
    forged.cookies[services.DEVICE_COOKIE] = '[["tech_xuanwo","abc"]]'
    assert "登录失败次数过多" in attempt(forged, technologist.username, PASSWORD).content.decode()


def test_a_shared_workstation_remembers_each_of_its_users(technologist, radiologist):
    browser = Client()
    for user in (technologist, radiologist):
        assert attempt(browser, user.username, PASSWORD, OWNER).status_code == 302
        browser.post(reverse("logout"))
    cookie = browser.cookies[services.DEVICE_COOKIE].value
    assert services.remembered_device(cookie, technologist.username) is not None
    assert services.remembered_device(cookie, radiologist.username) is not None
    assert services.remembered_device(cookie, "someone_else") is None


def test_the_device_cookie_is_set_http_only(technologist):
    response = attempt(Client(), technologist.username, PASSWORD, OWNER)
    morsel = response.cookies[services.DEVICE_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert int(morsel["max-age"]) == 90 * 24 * 3600


# --- The address limit -------------------------------------------------------------------------


def test_one_address_guessing_many_names_is_refused_after_twenty(technologist, radiologist):
    stranger = Client()
    for n in range(20):
        assert attempt(stranger, f"someone{n}", "guess").status_code == 200
    response = attempt(stranger, technologist.username, PASSWORD)
    assert "来自本地址的登录失败次数过多" in response.content.decode()
    assert not signed_in(stranger)
    # None of the names it tried once is locked, and other addresses are not affected.
    assert services.login_locked_until("someone0") is None
    assert services.address_locked_until(ATTACKER) is not None
    assert attempt(Client(), radiologist.username, PASSWORD, OWNER).status_code == 302
    event = AuditEvent.objects.get(action=services.LOGIN_LOCKED)
    assert (event.address, event.detail["limit"]) == (ATTACKER, "address")


def test_a_refused_address_no_longer_counts_against_any_name(technologist):
    stranger = Client()
    for n in range(20):
        attempt(stranger, f"someone{n}", "guess")
    for _ in range(10):
        attempt(stranger, technologist.username, "guess")
    assert services.login_locked_until(technologist.username) is None
    assert password_checks(technologist.username) == 0
    assert attempt(Client(), technologist.username, PASSWORD, OWNER).status_code == 302


def test_a_successful_login_gives_back_only_its_own_attempt(technologist, settings):
    settings.LOGIN_ADDRESS_MAX_FAILURES = 3
    stranger = Client()
    for n in range(2):
        attempt(stranger, f"someone{n}", "guess")
    # The guesser's own account does not reset the address's count: one guess is left.
    assert attempt(Client(), technologist.username, PASSWORD).status_code == 302
    assert "来自本地址" not in attempt(Client(), "someone8", "guess").content.decode()
    assert "来自本地址" in attempt(Client(), "someone9", "guess").content.decode()


def test_x_forwarded_for_from_an_unlisted_address_does_not_change_the_count(technologist, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.1"]
    stranger = Client()
    for n in range(20):
        attempt(stranger, f"someone{n}", "guess", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    response = attempt(stranger, technologist.username, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.99")
    assert "来自本地址" in response.content.decode()


def test_the_address_comes_from_a_trusted_proxy(technologist, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.1"]
    proxy = Client()
    for n in range(20):
        attempt(proxy, f"someone{n}", "guess", "10.0.0.1", HTTP_X_FORWARDED_FOR=ATTACKER)
    assert services.address_locked_until(ATTACKER) is not None
    # Another client behind the same proxy is not refused.
    response = attempt(proxy, technologist.username, PASSWORD, "10.0.0.1", HTTP_X_FORWARDED_FOR=OWNER)
    assert response.status_code == 302


def test_the_address_limit_comes_from_settings(settings, db):
    settings.LOGIN_ADDRESS_MAX_FAILURES = 2
    stranger = Client()
    attempt(stranger, "a_name", "guess")
    attempt(stranger, "b_name", "guess")
    assert "来自本地址" in attempt(stranger, "c_name", "guess").content.decode()


def test_the_address_lockout_message_is_translated_to_english(settings, db):
    settings.LOGIN_ADDRESS_MAX_FAILURES = 1
    stranger = Client()
    stranger.cookies["django_language"] = "en"
    attempt(stranger, "a_name", "guess")
    response = attempt(stranger, "b_name", "guess")
    assert "Too many failed logins from this address" in response.content.decode()


# --- The old password ----------------------------------------------------------------------------


def change_password(client: Client, old: str, url: str | None = None, **extra):
    return client.post(
        url or reverse("password_change"),
        {"old_password": old, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        **extra,
    )


def test_wrong_old_passwords_are_counted_like_logins(technologist_client, technologist):
    for _ in range(5):
        response = change_password(technologist_client, "guess", REMOTE_ADDR=ATTACKER)
        assert response.status_code == 200
    response = change_password(technologist_client, PASSWORD, REMOTE_ADDR=ATTACKER)
    assert response.status_code == 200
    assert "登录失败次数过多" in response.content.decode()
    technologist.refresh_from_db()
    assert technologist.check_password(PASSWORD)
    failed = AuditEvent.objects.filter(action=services.PASSWORD_CHANGE_FAILED)
    assert failed.count() == 5
    assert {(event.actor, event.address) for event in failed} == {(technologist, ATTACKER)}
    assert not AuditEvent.objects.filter(action=services.PASSWORD_CHANGED).exists()


def test_old_password_guesses_lock_the_login_too(technologist_client, technologist):
    for _ in range(5):
        change_password(technologist_client, "guess", REMOTE_ADDR=ATTACKER)
    assert "登录失败次数过多" in attempt(Client(), technologist.username, PASSWORD).content.decode()


def test_the_right_old_password_after_a_few_wrong_ones_goes_through(technologist_client, technologist):
    for _ in range(4):
        change_password(technologist_client, "guess")
    assert change_password(technologist_client, PASSWORD).status_code == 302
    technologist.refresh_from_db()
    assert technologist.check_password(NEW_PASSWORD)
    assert services.login_locked_until(technologist.username) is None


def test_the_admins_password_page_counts_wrong_old_passwords_too(administrator):
    administrator.is_staff = True
    administrator.save(update_fields=["is_staff"])
    client = Client()
    client.force_login(administrator)
    url = reverse("admin:password_change")
    for _ in range(5):
        assert change_password(client, "guess", url, REMOTE_ADDR=ATTACKER).status_code == 200
    response = change_password(client, PASSWORD, url, REMOTE_ADDR=ATTACKER)
    assert response.status_code == 200
    assert "登录失败次数过多" in response.content.decode()
    administrator.refresh_from_db()
    assert administrator.check_password(PASSWORD)
    assert AuditEvent.objects.filter(action=services.PASSWORD_CHANGE_FAILED).count() == 5
