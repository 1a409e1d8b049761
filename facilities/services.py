"""Services of the facilities app: looking up who is who, and the audit trail."""

from __future__ import annotations

from typing import Any

from django.db.models import Model
from django.http import HttpRequest

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
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


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
