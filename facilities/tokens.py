"""How a program presents an API token: `Authorization: Token <key>` or `Bearer <key>`
(the scheme OHIF and most DICOMweb clients send), checked by django-rest-knox against the
stored digests of facilities.models.ApiToken."""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext_lazy as _
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission

from facilities.models import ApiToken

# What knox makes: the prefix and 64 hex digits. Anything else is refused before the
# database is asked, so a malformed header (a NUL, bytes that are not UTF-8) is a 401.
TOKEN_FORMAT = re.compile(rb"^[A-Za-z0-9_]{1,128}$")


class TokenAuthentication(KnoxTokenAuthentication):
    keyword = "Token"

    def authenticate_header(self, request: Any) -> str:
        return self.keyword

    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        if not TOKEN_FORMAT.match(token):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        return super().authenticate_credentials(token)  # type: ignore[no-any-return]


class BearerAuthentication(TokenAuthentication):
    keyword = "Bearer"


class TokenScopePermission(BasePermission):
    """A read-only token may only read: for a DRF view, what dicomweb_view does for DICOMweb."""

    message = "This token may only read; make one that may write."

    def has_permission(self, request: Any, view: Any) -> bool:
        token = getattr(request, "auth", None)
        if request.method in SAFE_METHODS or not isinstance(token, ApiToken):
            return True
        return token.may_write
