"""Sign-ins and sign-outs in the audit trail, through Django's own authentication signals:
they fire for every way in (the login page, the admin's login, the test client), so no
login path can skip the record."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

from facilities import services
from facilities.models import User


@receiver(user_logged_in, dispatch_uid="facilities.audit_login_succeeded")
def audit_login_succeeded(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    services.audit(services.LOGIN_SUCCEEDED, actor=user, request=request, obj=user)


@receiver(user_login_failed, dispatch_uid="facilities.audit_login_failed")
def audit_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Only the name tried: Django has already masked the password, and it is never kept.
    username = str(credentials.get("username") or "")[:150]
    services.audit(services.LOGIN_FAILED, request=request, object_type="facilities.user", username=username)


@receiver(user_logged_out, dispatch_uid="facilities.audit_logged_out")
def audit_logged_out(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    if user is None:
        return
    services.audit(services.LOGGED_OUT, actor=user, request=request, obj=user)
