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
from django.http import Http404, HttpRequest, HttpResponseBase

from facilities.models import Facility, User
from facilities.services import audit

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


# A request that names a study (by its UID, or a consult of it by its UUID) outside the
# caller's scope: answered 404 like one that does not exist, and written in the trail.
STUDY_REFUSED = "cloudpacs.study.access_refused"


def refuse_study(request: HttpRequest | None, study: Any, *, via: str, **detail: Any) -> None:
    """Write one `cloudpacs.study.access_refused` entry, under the study's facility (its
    administrators see it on the audit page), for a request that named it and was refused:
    one entry per request, whatever it would have sent (a study, a frame, a PDF)."""
    audit(STUDY_REFUSED, request=request, obj=study, facility=study.facility, via=via, **detail)


def _via(request: HttpRequest) -> str:
    match = request.resolver_match
    return match.view_name if match is not None else request.path


def refused_study_uid(request: HttpRequest, study_uid: str, *, via: str = "") -> None:
    """Audit a refusal of the study `study_uid` when it exists (nothing is written for a
    UID that names no study: there is nothing to protect, and nothing to flood with)."""
    study_model = apps.get_model("cloudpacs", "Study")
    found = study_model.objects.select_related("facility").filter(study_uid=study_uid).first()
    if found is not None:
        refuse_study(request, found, via=via or _via(request))


def study_or_404(request: HttpRequest, study_uid: str, queryset: QuerySet[Any] | None = None) -> Any:
    """The study `study_uid` if the user may open it (`studies_for`, or the narrower
    `queryset` given), else 404, with the refusal audited when the study exists. Every page
    that names a study by its UID fetches it here."""
    visible = studies_for(request.user) if queryset is None else queryset
    found = visible.filter(study_uid=study_uid).first()
    if found is None:
        refused_study_uid(request, study_uid)
        raise Http404
    return found


def consult_or_404(request: HttpRequest, consult_uuid: Any, queryset: QuerySet[Any] | None = None) -> Any:
    """The consult `consult_uuid` if the user may see it (`consults_for`), else 404, with
    the refusal audited under its study when it exists (the reading page, the report and
    its PDF all show the patient's study)."""
    visible = consults_for(request.user) if queryset is None else queryset
    found = visible.filter(uuid=consult_uuid).first()
    if found is None:
        consult_model = apps.get_model("consults", "Consult")
        other = consult_model.objects.select_related("study__facility").filter(uuid=consult_uuid).first()
        if other is not None and other.study is not None:
            refuse_study(request, other.study, via=_via(request), consult=str(other.uuid))
        raise Http404
    return found


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
