"""Who may see what: the one place where pages are authorized and scoped by facility.

Views name the roles a page is for with `role_required`, then fetch through the scoped
querysets below, so a technologist can only ever reach rows of their own facility. A row
outside the user's scope is a 404, not a 403: whether another township's study exists is
itself something a stranger must not learn.

The clinical models belong to higher apps (cloudpacs, consults); they are looked up by
label when a helper runs, so this lowest app keeps importing none of them."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.apps import apps
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponseBase

from facilities.models import Facility, User

# Any response: a streamed export (StreamingHttpResponse, FileResponse) as much as a page.
View = TypeVar("View", bound=Callable[..., HttpResponseBase])

TECHNOLOGIST = User.Role.TECHNOLOGIST
RADIOLOGIST = User.Role.RADIOLOGIST
ADMINISTRATOR = User.Role.ADMINISTRATOR
# The roles that take part in reading and may open patients' images and reports.
CLINICAL_ROLES = (TECHNOLOGIST, RADIOLOGIST)


def has_role(user: Any, *roles: str) -> bool:
    return bool(user.is_authenticated and user.is_active and getattr(user, "role", None) in roles)


def role_required(*roles: str) -> Callable[[View], View]:
    """Let a view run only for a signed-in user holding one of `roles`.

    Anonymous users go to the login page; a signed-in user with another role gets 403,
    since the page itself (a worklist, a dashboard) is no secret, only its rows are."""
    if not roles:
        raise ValueError("role_required needs at least one role")

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def confined_to(user: Any) -> int | None:
    """The one facility a user is confined to, for patients' rows and the dashboards'
    figures alike: a technologist's own (0 when they have none). None for the roles that
    see every township."""
    if has_role(user, TECHNOLOGIST):
        return int(user.facility_id or 0)
    return None


def scoped(queryset: QuerySet[Any], user: Any, facility_field: str = "facility") -> QuerySet[Any]:
    """The rows of `queryset` this user may see, given the path to their facility.

    Technologists see their own facility only; radiologists read for every township and
    see all; anyone else sees nothing clinical."""
    own = confined_to(user)
    if own is not None:
        return queryset.filter(**{f"{facility_field}_id": own}) if own else queryset.none()
    if has_role(user, RADIOLOGIST):
        return queryset
    return queryset.none()


def facilities_for(user: Any) -> QuerySet[Facility]:
    """Facilities whose pages the user may open."""
    own = confined_to(user)
    if own is not None:
        return Facility.objects.filter(pk=own)
    if has_role(user, RADIOLOGIST):
        return Facility.objects.all()
    return Facility.objects.none()


def studies_for(user: Any) -> QuerySet[Any]:
    """Archive studies the user may open. Radiologists see the studies sent for reading
    (those with a consult), not whatever else a township keeps in the archive."""
    study_model = apps.get_model("cloudpacs", "Study")
    queryset = study_model.objects.select_related("patient", "facility", "modality")
    if has_role(user, RADIOLOGIST):
        # EXISTS rather than a join on the consult: PostgreSQL then keeps walking the
        # studies' own order index for a page deep in the list.
        consult_model = apps.get_model("consults", "Consult")
        queryset = queryset.filter(Exists(consult_model.objects.filter(study=OuterRef("pk"))))
    return scoped(queryset, user)


def studies_for_entity(entity: Any) -> QuerySet[Any]:
    """Archive studies a registered application entity may query and retrieve over DIMSE,
    by the same rule as the people at it: an entity of a township sees its own facility's
    studies (as its technologists do); one of the county hospital sees the studies sent
    for reading (as its radiologists do)."""
    study_model = apps.get_model("cloudpacs", "Study")
    queryset = study_model.objects.all()
    if entity.facility.kind == Facility.Kind.COUNTY_HOSPITAL:
        consult_model = apps.get_model("consults", "Consult")
        return queryset.filter(Exists(consult_model.objects.filter(study=OuterRef("pk"))))
    return queryset.filter(facility_id=entity.facility_id)


def consults_for(user: Any) -> QuerySet[Any]:
    consult_model = apps.get_model("consults", "Consult")
    queryset = consult_model.objects.select_related("facility", "modality", "radiologist", "study__patient")
    return scoped(queryset, user)


def orders_for(user: Any) -> QuerySet[Any]:
    """Orders (检查申请) the user may see and manage: a technologist's own township's. The
    county reads the consults that orders become, not the townships' registers."""
    order_model = apps.get_model("cloudpacs", "Order")
    queryset = order_model.objects.select_related("modality", "facility", "study").prefetch_related("body_parts")
    if has_role(user, TECHNOLOGIST) and user.facility_id is not None:
        return queryset.filter(facility_id=user.facility_id)
    return queryset.none()


def figure_townships(user: Any) -> QuerySet[Facility]:
    """The townships whose figures (the dashboards) the user may see: a technologist's own;
    every one for radiologists and administrators, who compare them."""
    townships = Facility.objects.filter(kind=Facility.Kind.TOWNSHIP_CENTRE)
    own = confined_to(user)
    return townships if own is None else townships.filter(pk=own)
