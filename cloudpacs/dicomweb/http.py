"""What every DICOMweb route shares: who is calling (the web session or a token), the
facility scope they get, CORS for a separately hosted viewer such as OHIF, and reading
Accept headers with their media type parameters and q-values."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_exceptions

from cloudpacs.dicomweb.multipart import parse_media_type
from facilities.access import CLINICAL_ROLES, has_role
from facilities.tokens import BearerAuthentication, TokenAuthentication

logger = logging.getLogger("cloudpacs.dicomweb")

REALM = 'Bearer realm="yunying-dicomweb", Token realm="yunying-dicomweb"'
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
NO_ACCEPT = "an Accept header field is required (PS3.18 8.7.7); send Accept: */* for the resource's default media type"


class DicomwebError(Exception):
    """A request answered with an HTTP error status and a short plain-text reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def bad_request(reason: str) -> DicomwebError:
    return DicomwebError(400, reason)


def not_acceptable(reason: str) -> DicomwebError:
    return DicomwebError(406, reason)


def authenticate(request: HttpRequest) -> tuple[Any, Any]:
    """(user, token): the API token in the Authorization header, which wins over the web
    session, or None when the session is used."""
    for backend in (TokenAuthentication(), BearerAuthentication()):
        try:
            result = backend.authenticate(request)  # type: ignore[arg-type]
        except drf_exceptions.AuthenticationFailed as exc:
            raise DicomwebError(401, str(exc.detail), {"WWW-Authenticate": REALM}) from exc
        if result is not None:
            return result[0], result[1]
    return request.user, None


def request_body(request: HttpRequest) -> Any:
    """The request's body, to be read as a stream.

    A chunked body (Transfer-Encoding: chunked and no Content-Length, as Orthanc's STOW-RS
    client sends by default) is one Django does not see: it reads Content-Length bytes,
    none. A server that has decoded the chunks and ends its input where the body ends says
    so with `wsgi.input_terminated` (gunicorn, which `manage.py platform` runs); its input
    is the body. Behind any other server such a body is refused with 411."""
    meta = request.META
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and not meta.get("CONTENT_LENGTH"):
        if meta.get("wsgi.input_terminated"):
            return meta["wsgi.input"]
        raise DicomwebError(411, "a chunked body is not read by this server; send it with a Content-Length")
    return request


def _csrf_failure(request: HttpRequest) -> HttpResponseBase | None:
    check = CsrfViewMiddleware(lambda _request: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda _request: HttpResponse(), (), {})


def cors_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    origin = request.headers.get("Origin")
    allowed = getattr(settings, "DICOMWEB_CORS_ORIGINS", [])
    if origin and (origin in allowed or "*" in allowed):
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Credentials"] = "true"
        response["Access-Control-Expose-Headers"] = "Content-Type, Content-Length, Content-Location, Warning"
        response["Vary"] = "Origin"
    return response


def _preflight(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(status=204)
    cors_headers(request, response)
    if "Access-Control-Allow-Origin" in response:
        response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = "Authorization, Accept, Content-Type, Range, Cache-Control"
        response["Access-Control-Max-Age"] = "600"
    return response


def error_response(error: DicomwebError) -> HttpResponse:
    response = HttpResponse(error.reason + "\n", status=error.status, content_type="text/plain; charset=utf-8")
    for name, value in error.headers.items():
        response[name] = value
    return response


def dicomweb_view(
    *methods: str, accept_required: bool = True
) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Authenticate (session or token), allow clinical roles only, apply CSRF to
    session-authenticated writes, answer CORS, and turn DicomwebError into its status.

    Anonymous callers get 401 with a WWW-Authenticate challenge, not the login page:
    these routes are for programs. Other roles (administrators) get 403.

    A GET (or HEAD) without an Accept header field is 406 (PS3.18 8.7.7: a request that
    might have a response payload shall carry one, and the origin server shall answer 406
    when it does not): `*/*` is how a client says it takes the resource's default, and
    curl, requests, browsers and dicomweb-client all send an Accept. WADO-URI
    (`accept_required=False`, PS3.18 9) names its media type by `contentType`."""
    # HEAD wherever GET (RFC 9110 9.1): the same answer's header fields, without its body.
    allowed = set(methods) | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())

    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method == "OPTIONS":
                return _preflight(request)
            try:
                if request.method not in allowed:
                    raise DicomwebError(405, "method not allowed", {"Allow": ", ".join(sorted(allowed))})
                user, token = authenticate(request)
                if not user.is_authenticated:
                    raise DicomwebError(401, "authentication required", {"WWW-Authenticate": REALM})
                request.user = user
                if not has_role(user, *CLINICAL_ROLES):
                    raise DicomwebError(403, "this account may not read images")
                if accept_required and request.method in {"GET", "HEAD"} and "Accept" not in request.headers:
                    raise not_acceptable(NO_ACCEPT)
                if request.method not in SAFE_METHODS:
                    if token is None and _csrf_failure(request) is not None:
                        raise DicomwebError(403, "CSRF verification failed")
                    if token is not None and not token.may_write:
                        raise DicomwebError(403, "this token may only read; make one that may write")
                response = view(request, *args, **kwargs)
            except DicomwebError as error:
                response = error_response(error)
            except Http404:
                response = error_response(DicomwebError(404, "not found"))
            if request.method == "HEAD" and response.streaming:
                # Not one stored file is read for an answer whose body is not sent (an open
                # file is still closed with the response, by the server).
                response.streaming_content = []  # type: ignore[attr-defined]
            return cors_headers(request, response)

        return wrapper

    return decorator


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    params: dict[str, str]
    q: float

    @property
    def part_type(self) -> str:
        """For multipart/related; type="x", the x; otherwise the media type itself."""
        if self.media_type == "multipart/related":
            return self.params.get("type", "*/*").lower()
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        wanted = self.part_type
        if wanted in {"*/*", "*"}:
            return True
        if wanted.endswith("/*"):
            return media_type.split("/")[0] == wanted[:-2]
        return wanted == media_type


def _split_accept(value: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def accepted(request: HttpRequest, default: str = "*/*") -> list[MediaRange]:
    """The Accept header's media ranges, best first (ties keep the client's order)."""
    header = request.headers.get("Accept") or default
    ranges = []
    for item in _split_accept(header):
        media_type, params = parse_media_type(item)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append(MediaRange(media_type, params, q))
    ranges.sort(key=lambda item: -item.q)
    return ranges
