"""Services of the facilities app: looking up who is who, and the audit trail."""

from __future__ import annotations

import ipaddress
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from facilities.models import AuditEvent, Facility, Modality, User


def modality_for_ae_title(ae_title: str) -> Modality | None:
    """The active modality that calls itself ae_title, with its facility, or None."""
    title = ae_title.strip().upper()
    if not title:
        return None
    return Modality.objects.select_related("facility").filter(ae_title=title, is_active=True).first()


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


# Login attempts. Failures are counted from the audit trail itself, so the lockout needs no
# table of its own and an administrator sees exactly what the lockout saw.
LOGIN_SUCCEEDED = "facilities.login.succeeded"
LOGIN_FAILED = "facilities.login.failed"
LOGIN_LOCKED = "facilities.login.locked"
LOGGED_OUT = "facilities.login.logged_out"
PASSWORD_CHANGED = "facilities.password.changed"  # noqa: S105 (an action code)


def login_locked_until(username: str, *, now: datetime | None = None) -> datetime | None:
    """When the lockout of `username` ends, or None if it may try to sign in now.

    It is locked once LOGIN_MAX_FAILURES failures fall within the last
    LOGIN_LOCKOUT_MINUTES and no successful login followed them; it opens again when the
    oldest of those failures leaves the window. Refused attempts are not failures, so
    retrying during a lockout does not prolong it. `now` is for tests."""
    now = now or timezone.now()
    window = timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)
    limit = settings.LOGIN_MAX_FAILURES
    failures = AuditEvent.objects.filter(
        action=LOGIN_FAILED, detail__username=username, at__gt=now - window, at__lte=now
    )
    last_success = (
        AuditEvent.objects.filter(action=LOGIN_SUCCEEDED, actor_name=username, at__lte=now)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    if last_success is not None:
        failures = failures.filter(at__gt=last_success)
    recent = list(failures.order_by("-at").values_list("at", flat=True)[:limit])
    if len(recent) < limit:
        return None
    return recent[-1] + window


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
    username or the name tried in a failed login; `action` is a prefix of the dotted code;
    the dates are whole days, both included, in the site's time zone."""
    events = AuditEvent.objects.select_related("facility")
    if user:
        events = events.filter(Q(actor_name__icontains=user) | Q(detail__username__icontains=user))
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
