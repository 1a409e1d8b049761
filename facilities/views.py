"""The front door: "/" sends each person to the page their role works from; signing in;
changing one's own password; one's own API tokens; and the administrator's search of the
audit trail, which can only be read here, never changed."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse_lazy
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from facilities import auditlabels, services
from facilities.access import ADMINISTRATOR, RADIOLOGIST, TECHNOLOGIST, has_role, role_required
from facilities.forms import ApiTokenForm, AuditSearchForm, LoginForm, ThrottledPasswordChangeForm, page_number
from facilities.models import ApiToken

AUDIT_PAGE_SIZE = 50


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


@role_required(ADMINISTRATOR)
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditSearchForm(request.GET)
    # An invalid criterion (a malformed date) shows nothing rather than everything.
    events = services.search_audit(**form.cleaned_data) if form.is_valid() else services.search_audit().none()
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(page_number(request.GET))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "facilities/audit.html",
        {
            "form": form,
            "page": page,
            "rows": auditlabels.shown_events(page.object_list),
            "actions": auditlabels.action_choices(),
            "page_query": query.urlencode(),
            "count": page.paginator.count,
        },
    )


class LoginView(auth_views.LoginView):
    """The login page. A successful sign-in remembers this browser for the user (a signed
    cookie), so that a stranger's failed guesses at their name do not keep them out of it."""

    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_valid(form)
        response.set_cookie(
            services.DEVICE_COOKIE,
            services.remember_device(self.request.COOKIES.get(services.DEVICE_COOKIE), form.get_user().get_username()),
            max_age=settings.LOGIN_DEVICE_DAYS * 24 * 3600,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    """Every signed-in user changes their own password here, under the password rules
    (AUTH_PASSWORD_VALIDATORS); wrong old passwords are counted like failed logins; the
    change is audited and the session stays signed in."""

    template_name = "facilities/password_change.html"
    success_url = reverse_lazy("password_change_done")
    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        response = super().form_valid(form)
        services.audit(services.PASSWORD_CHANGED, request=self.request, obj=form.user)
        return response


login = LoginView.as_view()
password_change = PasswordChangeView.as_view()
password_change_done = auth_views.PasswordChangeDoneView.as_view(template_name="facilities/password_change_done.html")


@login_required
def api_tokens(request: HttpRequest) -> HttpResponse:
    """The user's own API tokens: made here (the secret is shown on this one answer and
    never again), listed by name and first characters, and revoked."""
    created: tuple[ApiToken, str] | None = None
    if request.method == "POST":
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            try:
                created = services.create_api_token(request.user, request=request, **form.cleaned_data)  # type: ignore[arg-type]
            except services.TooManyTokens:
                form.add_error(
                    None, _("最多可有 %(count)s 个有效令牌，请先吊销不用的。") % {"count": services.API_TOKENS_PER_USER}
                )
            else:
                form = ApiTokenForm()
    else:
        form = ApiTokenForm()
    response = render(
        request,
        "facilities/api_tokens.html",
        {
            "form": form,
            "tokens": services.api_tokens_of(request.user),  # type: ignore[arg-type]
            "created": created[0] if created else None,
            "secret": created[1] if created else None,
        },
    )
    # The secret must not stay in a cache or the browser's history.
    add_never_cache_headers(response)
    return response


@login_required
@require_POST
def revoke_api_token(request: HttpRequest, token_uuid: UUID) -> HttpResponse:
    token = get_object_or_404(ApiToken, uuid=token_uuid, user=request.user)
    services.revoke_api_token(request.user, token, request=request)  # type: ignore[arg-type]
    messages.success(request, _("令牌 %(name)s 已吊销。") % {"name": token.name})
    return redirect("api_tokens")
