"""The front door: "/" sends each person to the page their role works from."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from facilities.access import ADMINISTRATOR, RADIOLOGIST, TECHNOLOGIST, has_role


@login_required
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    if has_role(user, TECHNOLOGIST) and user.facility is not None:  # type: ignore[union-attr]
        return redirect("consults:facility", facility_uuid=user.facility.uuid)  # type: ignore[union-attr]
    if has_role(user, RADIOLOGIST):
        return redirect("consults:worklist")
    if has_role(user, ADMINISTRATOR):
        return redirect("billing:dashboard")
    if user.is_staff:
        # An account made by createsuperuser, with no role yet: the admin is where it gets one.
        return redirect("admin:index")
    raise PermissionDenied
