"""Services of the facilities app: looking up who is who, and the audit trail."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Case, F, Model, Q, QuerySet, Value, When
from django.http import HttpRequest
from django.utils import timezone

from facilities.models import ApiToken, ApplicationEntity, AuditEvent, Facility, LoginThrottle, Modality, User


def modality_for_ae_title(ae_title: str) -> Modality | None:
    """The active modality that calls itself ae_title, with its facility, or None."""
    title = ae_title.strip().upper()
    if not title:
        return None
    return Modality.objects.select_related("facility").filter(ae_title=title, is_active=True).first()


def application_entity_for_ae_title(ae_title: str) -> ApplicationEntity | None:
    """The registered application entity that calls itself ae_title, with its facility
    and its console's modality, if it may connect now: it is active, its facility is, and
    a console's modality is. None otherwise."""
    title = ae_title.strip().upper()
    if not title:
        return None
    entity = (
        ApplicationEntity.objects.select_related("facility", "modality", "modality__facility")
        .filter(ae_title=title, is_active=True, facility__is_active=True)
        .first()
    )
    if entity is None or (entity.modality is not None and not entity.modality.is_active):
        return None
    return entity


def move_destination(ae_title: str) -> ApplicationEntity | None:
    """The registered, active move destination called ae_title, or None."""
    entity = application_entity_for_ae_title(ae_title)
    if entity is None or not entity.is_move_destination:
        return None
    host, port = entity.network_address
    if not host or not port:
        return None
    return entity


def county_hospital() -> Facility | None:
    return Facility.objects.filter(kind=Facility.Kind.COUNTY_HOSPITAL).order_by("id").first()


def client_address(request: HttpRequest | None) -> str | None:
    """The address a request came from. From a reverse proxy listed in TRUSTED_PROXIES, it
    is the nearest X-Forwarded-For address that is not a listed proxy; otherwise the
    header is ignored, as any client can send it."""
    if request is None:
        return None
    address = request.META.get("REMOTE_ADDR") or None
    trusted = set(settings.TRUSTED_PROXIES)
    if address in trusted:
        forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        for hop in reversed(forwarded):
            if hop not in trusted:
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return address
    return address


def audit(
    action: str,
    *,
    actor: User | None = None,
    request: HttpRequest | None = None,
    obj: Model | None = None,
    object_type: str = "",
    object_id: str = "",
    facility: Facility | None = None,
    **detail: Any,
) -> AuditEvent:
    """Record one action with a dotted code such as `consults.report.signed`.

    The actor defaults to the request's user; the object is named by its model label and
    its opaque id (a UID or UUID where it has one), never by a sequential key alone."""
    user = getattr(request, "user", None)
    if actor is None and user is not None and user.is_authenticated:
        actor = user
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(
            getattr(obj, "uuid", None)
            or getattr(obj, "study_uid", None)
            or getattr(obj, "sop_instance_uid", None)
            or obj.pk
        )
        if facility is None:
            facility = getattr(obj, "facility", None) if not isinstance(obj, Facility) else obj
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        action=action,
        address=client_address(request),
        object_type=object_type,
        object_id=object_id,
        facility=facility,
        detail=detail,
    )


# Login attempts, in the audit trail: who tried which name from where, and what was refused.
LOGIN_SUCCEEDED = "facilities.login.succeeded"
LOGIN_FAILED = "facilities.login.failed"
LOGIN_LOCKED = "facilities.login.locked"
LOGGED_OUT = "facilities.login.logged_out"
PASSWORD_CHANGED = "facilities.password.changed"  # noqa: S105 (an action code)
PASSWORD_CHANGE_FAILED = "facilities.password.change_failed"  # noqa: S105 (an action code)

# Password guessing is throttled in three counts (docs/operations.md, "Sign-in"):
# - each client address: LOGIN_ADDRESS_MAX_FAILURES attempts a window, whatever the names
#   tried, so a guesser runs out long before they have locked many accounts;
# - each username, tried from a browser the user has not signed in from:
#   LOGIN_MAX_FAILURES attempts a window, from all addresses together;
# - each browser the user has signed in from (a signed "device" cookie naming them):
#   LOGIN_MAX_FAILURES attempts a window of its own. A stranger who locks a username
#   locks it only for unknown browsers; its owner signs in from their usual one.
ADDRESS = "address"
ACCOUNT = "account"
DEVICE_COOKIE = "yunying_device"
DEVICE_SALT = "facilities.login.device"
DEVICES_REMEMBERED = 8


@dataclass
class PasswordAttempt:
    """One password check, counted before it is made. `refused` says which limit refused
    it ("address" or "account"), with the time the limit lifts; None: check the password."""

    account_key: str
    address_key: str | None = None
    refused: str | None = None
    locked_until: datetime | None = None


def _window() -> timedelta:
    return timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)


def _count_attempt(key: str, now: datetime) -> LoginThrottle:
    """Count one attempt against `key` and return the row as this attempt left it.

    The INSERT and the UPDATE are writes, so the transaction holds the row (PostgreSQL's
    row lock, SQLite's write lock) from the UPDATE to the commit: parallel attempts are
    counted one after another, and each reads back its own count."""
    cutoff = now - _window()
    expired = Q(window_started_at__lte=cutoff)
    with transaction.atomic():
        LoginThrottle.objects.bulk_create(
            [LoginThrottle(key=key, failures=0, window_started_at=now)], ignore_conflicts=True
        )
        LoginThrottle.objects.filter(key=key).update(
            failures=Case(When(expired, then=Value(1)), default=F("failures") + 1),
            window_started_at=Case(When(expired, then=Value(now)), default=F("window_started_at")),
        )
        return LoginThrottle.objects.get(key=key)


def _address_key(address: str | None) -> str:
    return f"address:{address or 'unknown'}"


def _account_key(username: str) -> str:
    return f"user:{username.lower()}"


def remembered_device(cookie: str | None, username: str) -> str | None:
    """The id of this browser for `username` if its signed device cookie names them."""
    if not cookie:
        return None
    try:
        pairs = signing.loads(cookie, salt=DEVICE_SALT, max_age=timedelta(days=settings.LOGIN_DEVICE_DAYS))
    except signing.BadSignature:
        return None
    for name, device in pairs if isinstance(pairs, list) else []:
        if name == username.lower():
            return str(device)
    return None


def remember_device(cookie: str | None, username: str) -> str:
    """The device cookie's new value after `username` signed in from this browser: their
    own id (kept if they had one), before those of the few others who use it."""
    pairs: list[list[str]] = []
    if cookie:
        try:
            loaded = signing.loads(cookie, salt=DEVICE_SALT, max_age=timedelta(days=settings.LOGIN_DEVICE_DAYS))
        except signing.BadSignature:
            loaded = []
        pairs = (
            [pair for pair in loaded if isinstance(pair, list) and len(pair) == 2] if isinstance(loaded, list) else []
        )
    name = username.lower()
    device = next((device for other, device in pairs if other == name), None) or secrets.token_urlsafe(16)
    pairs = [[name, device]] + [pair for pair in pairs if pair[0] != name]
    return signing.dumps(pairs[:DEVICES_REMEMBERED], salt=DEVICE_SALT, compress=True)


def begin_password_attempt(
    username: str, *, address: str | None, device_cookie: str | None = None, now: datetime | None = None
) -> PasswordAttempt:
    """Count a password attempt for `username` from `address` before the password is
    checked.

    From a browser the user has signed in from, only that browser's own count applies:
    nobody else's guesses, from any address, can keep its owner out. From anywhere else
    the address is counted first, and once it is over its limit its attempts no longer
    count against any username: a refused guesser cannot go on locking accounts."""
    now = now or timezone.now()
    device = remembered_device(device_cookie, username)
    if device is not None:
        row = _count_attempt(f"device:{device}", now)
        attempt = PasswordAttempt(account_key=row.key)
    else:
        address_row = _count_attempt(_address_key(address), now)
        if address_row.failures > settings.LOGIN_ADDRESS_MAX_FAILURES:
            return PasswordAttempt(
                account_key=_account_key(username),
                refused=ADDRESS,
                locked_until=address_row.window_started_at + _window(),
            )
        row = _count_attempt(_account_key(username), now)
        attempt = PasswordAttempt(account_key=row.key, address_key=address_row.key)
    if row.failures > settings.LOGIN_MAX_FAILURES:
        attempt.refused, attempt.locked_until = ACCOUNT, row.window_started_at + _window()
    return attempt


def password_attempt_succeeded(attempt: PasswordAttempt) -> None:
    """The right password: the username's (or browser's) count starts again, and the
    address gets back the attempt it spent (only that one, or a guesser holding one
    account of their own could reset their address's count with it)."""
    LoginThrottle.objects.filter(key=attempt.account_key).delete()
    if attempt.address_key is not None:
        LoginThrottle.objects.filter(key=attempt.address_key, failures__gt=0).update(failures=F("failures") - 1)


def login_locked_until(username: str, *, now: datetime | None = None) -> datetime | None:
    """When a username's lockout for unknown browsers ends, or None if it is not locked.
    `now` is for tests."""
    return _locked_until(_account_key(username), settings.LOGIN_MAX_FAILURES, now or timezone.now())


def address_locked_until(address: str, *, now: datetime | None = None) -> datetime | None:
    """When the refusal of every login from `address` ends, or None."""
    return _locked_until(_address_key(address), settings.LOGIN_ADDRESS_MAX_FAILURES, now or timezone.now())


def _locked_until(key: str, limit: int, now: datetime) -> datetime | None:
    row = LoginThrottle.objects.filter(key=key).first()
    if row is None or row.failures < limit:
        return None
    until = row.window_started_at + _window()
    return until if until > now else None


def search_audit(
    *,
    user: str = "",
    action: str = "",
    object_id: str = "",
    facility: Facility | None = None,
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    """Audit events matching every given criterion, newest first. `user` matches the actor's
    username or the name tried in a failed login, or the name of the person with that
    username (李, 李医生); `action` is a prefix of the dotted code; the dates are whole days,
    both included, in the site's time zone."""
    events = AuditEvent.objects.select_related("facility")
    if user:
        named = list(User.objects.filter(display_name__icontains=user).values_list("username", flat=True))
        events = events.filter(
            Q(actor_name__icontains=user)
            | Q(detail__username__icontains=user)
            | Q(actor_name__in=named)
            | Q(detail__username__in=named)
        )
    if action:
        events = events.filter(action__startswith=action)
    if object_id:
        events = events.filter(object_id=object_id)
    if facility is not None:
        events = events.filter(facility=facility)
    if since is not None:
        events = events.filter(at__date__gte=since)
    if until is not None:
        events = events.filter(at__date__lte=until)
    return events.order_by("-at", "-id")


# API tokens: each user makes and revokes their own on the "API tokens" page.
API_TOKEN_CREATED = "facilities.api_token.created"  # noqa: S105 (an action code)
API_TOKEN_REVOKED = "facilities.api_token.revoked"  # noqa: S105 (an action code)
API_TOKENS_PER_USER = 10


class TooManyTokens(Exception):
    pass


def api_tokens_of(user: User) -> QuerySet[ApiToken]:
    """The user's tokens still in force, newest first."""
    return ApiToken.objects.filter(user=user).active().order_by("-created")


def create_api_token(
    user: User, *, name: str, scope: str, days: int, request: HttpRequest | None = None
) -> tuple[ApiToken, str]:
    """A new token for `user` and its secret, which is shown once and never stored: only
    its digest is kept. Expired tokens of the user are cleared first."""
    ApiToken.objects.filter(user=user, expiry__lte=timezone.now()).delete()
    if api_tokens_of(user).count() >= API_TOKENS_PER_USER:
        raise TooManyTokens
    days = min(days, settings.API_TOKEN_MAX_DAYS)
    token, secret = ApiToken.objects.create(user, expiry=timedelta(days=days), name=name, scope=scope)
    audit(
        API_TOKEN_CREATED,
        actor=user,
        request=request,
        obj=token,
        facility=user.facility,
        token=token.token_key,
        name=name,
        scope=scope,
        expiry=token.expiry.isoformat() if token.expiry else None,
    )
    return token, secret


def revoke_api_token(user: User, token: ApiToken, *, request: HttpRequest | None = None) -> None:
    token.delete()
    audit(
        API_TOKEN_REVOKED,
        actor=user,
        request=request,
        object_type="facilities.apitoken",
        object_id=str(token.uuid),
        facility=user.facility,
        tokens=[token.token_key],
        name=token.name,
        reason="revoked_by_owner",
    )
