"""The login form, with the lockout after repeated failures."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from facilities import services
from facilities.models import Facility

LOCKED_MESSAGE = _("登录失败次数过多，该账户已暂时锁定，请在 %(minutes)s 分钟后重试。")


class LockoutMixin:
    """Refuse a username while it is locked out, even with the right password: the check
    runs before the password is tried, so a guesser learns nothing from it."""

    request: HttpRequest | None
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username:
            now = timezone.now()
            until = services.login_locked_until(username, now=now)
            if until is not None:
                services.audit(
                    services.LOGIN_LOCKED,
                    request=self.request,
                    object_type="facilities.user",
                    username=username,
                    locked_until=until.isoformat(),
                    max_failures=settings.LOGIN_MAX_FAILURES,
                )
                minutes = max(1, -(-int((until - now).total_seconds()) // 60))
                raise ValidationError(LOCKED_MESSAGE, code="locked", params={"minutes": minutes})
        return super().clean()  # type: ignore[misc,no-any-return]


class LoginForm(LockoutMixin, AuthenticationForm):
    """The login page's form."""

    error_messages = {**AuthenticationForm.error_messages, "invalid_login": _("用户名或密码不正确，请重试。")}


class AdminLoginForm(LockoutMixin, AdminAuthenticationForm):
    """The admin site's own login page, which would otherwise be a way round the lockout."""


class AuditSearchForm(forms.Form):
    user = forms.CharField(label=_("用户"), required=False, max_length=150)
    action = forms.CharField(
        label=_("操作代码"), required=False, max_length=64, help_text=_("按前缀匹配，如 consults.report")
    )
    object_id = forms.CharField(label=_("对象标识"), required=False, max_length=128)
    facility = forms.ModelChoiceField(
        label=_("机构"), queryset=Facility.objects.all(), to_field_name="uuid", required=False, empty_label=_("全部")
    )
    since = forms.DateField(label=_("起始日期"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("截止日期"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
