"""The login and password-change forms, counted against the limits on password guessing,
and the audit search."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, QueryDict
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from facilities import services
from facilities.models import ApiToken, Facility
from facilities.widgets import date_input

LOCKED_MESSAGE = _("登录失败次数过多，该账户已暂时锁定，请在 %(minutes)s 分钟后重试。")
ADDRESS_LOCKED_MESSAGE = _("来自本地址的登录失败次数过多，请在 %(minutes)s 分钟后重试。")


def begin_attempt(request: HttpRequest | None, username: str) -> services.PasswordAttempt:
    """Count a password attempt by `username` through `request` (facilities.services), and
    raise the lockout's message, audited, if a limit refuses it."""
    cookie = request.COOKIES.get(services.DEVICE_COOKIE) if request is not None else None
    now = timezone.now()
    attempt = services.begin_password_attempt(
        username, address=services.client_address(request), device_cookie=cookie, now=now
    )
    if attempt.refused is not None and attempt.locked_until is not None:
        services.audit(
            services.LOGIN_LOCKED,
            request=request,
            object_type="facilities.user",
            username=username[:150],
            limit=attempt.refused,
            locked_until=attempt.locked_until.isoformat(),
        )
        minutes = max(1, -(-int((attempt.locked_until - now).total_seconds()) // 60))
        message = ADDRESS_LOCKED_MESSAGE if attempt.refused == services.ADDRESS else LOCKED_MESSAGE
        raise ValidationError(message, code="locked", params={"minutes": minutes})
    return attempt


class LockoutMixin:
    """Count each login attempt before the password is checked, and refuse it, even with
    the right password, once a limit is reached: a guesser learns nothing from it."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if not username or not self.cleaned_data.get("password"):
            return super().clean()  # type: ignore[misc,no-any-return]
        attempt = begin_attempt(self.request, username)
        cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        services.password_attempt_succeeded(attempt)
        return cleaned


class LoginForm(LockoutMixin, AuthenticationForm):
    """The login page's form."""

    error_messages = {**AuthenticationForm.error_messages, "invalid_login": _("用户名或密码不正确，请重试。")}


class AdminLoginForm(LockoutMixin, AdminAuthenticationForm):
    """The admin site's own login page, which would otherwise be a way round the lockout."""


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Changing one's password asks for the old one: each try is counted like a login, or
    a borrowed session would be a way to guess it without limit."""

    def __init__(self, user: Any, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self) -> str:
        attempt = begin_attempt(self.request, self.user.get_username())
        try:
            old_password: str = super().clean_old_password()
        except ValidationError:
            services.audit(services.PASSWORD_CHANGE_FAILED, request=self.request, obj=self.user)
            raise
        services.password_attempt_succeeded(attempt)
        return old_password


class AdminPasswordChangeForm(ThrottledPasswordChangeForm):
    required_css_class = "required"


class AuditSearchForm(forms.Form):
    user = forms.CharField(label=_("用户"), required=False, max_length=150)
    action = forms.CharField(
        label=_("操作"),
        required=False,
        max_length=64,
        help_text=_("从列表中选择，或输入代码前缀，如 consults.report"),
        widget=forms.TextInput(attrs={"list": "audit-actions"}),
    )
    object_id = forms.CharField(label=_("对象标识"), required=False, max_length=128)
    facility = forms.ModelChoiceField(
        label=_("机构"), queryset=Facility.objects.all(), to_field_name="uuid", required=False, empty_label=_("全部")
    )
    since = forms.DateField(label=_("起始日期"), required=False, widget=date_input())
    until = forms.DateField(label=_("截止日期"), required=False, widget=date_input())


class ApiTokenForm(forms.Form):
    name = forms.CharField(label=_("名称"), max_length=64, help_text=_("用途，如 “OHIF 阅片站”"))
    scope = forms.ChoiceField(label=_("令牌权限"), choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    days = forms.TypedChoiceField(
        label=_("有效期"),
        coerce=int,
        initial=90,
        choices=[(7, _("7 天")), (30, _("30 天")), (90, _("90 天")), (365, _("365 天"))],
    )

    def clean_days(self) -> int:
        days: int = self.cleaned_data["days"]
        if days > settings.API_TOKEN_MAX_DAYS:
            raise ValidationError(
                _("有效期不能超过 %(days)s 天。"), code="too_long", params={"days": settings.API_TOKEN_MAX_DAYS}
            )
        return days


class PageForm(forms.Form):
    """Which page of a long list (`?page=`): a number from 1."""

    page = forms.IntegerField(required=False, min_value=1)


def page_number(query: QueryDict) -> int:
    """The page a list's query string asks for; the first for none or for anything but a
    number from 1 (a number past the last page is the last page, the paginator's rule)."""
    form = PageForm(query)
    return (form.cleaned_data["page"] if form.is_valid() else None) or 1
