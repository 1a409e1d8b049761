"""Request middleware of the project."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.middleware.locale import LocaleMiddleware
from django.utils import translation
from django.utils.translation import gettext


class ChosenLanguageMiddleware(LocaleMiddleware):
    """Chinese by default, English by the switch: the language is the one the user chose
    with the switch (its cookie), else LANGUAGE_CODE. The browser's Accept-Language is
    not consulted: a county hospital's shared workstation often runs an English-language
    browser, and the platform's users read Chinese."""

    def process_request(self, request: HttpRequest) -> None:
        chosen = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME, "")
        code = chosen if chosen in dict(settings.LANGUAGES) else settings.LANGUAGE_CODE
        translation.activate(code)
        request.LANGUAGE_CODE = translation.get_language()


# PostgreSQL's text types cannot hold NUL; a query with one fails in the driver ("A string
# literal cannot contain NUL"), which would be a 500 wherever a request value reaches a
# query. It is the one character PostgreSQL refuses: other control characters are stored,
# and bytes that are not UTF-8 were already replaced when Django decoded the request.
REFUSED_CHARACTERS = ("\x00",)


def _has_refused_character(text: str) -> bool:
    return any(character in text for character in REFUSED_CHARACTERS)


class RefuseNulMiddleware:
    """Answer 400 to a request whose path, query parameters, form fields (names or values)
    or cookies hold a NUL, before any view or the session lookup sees it. One place, so no
    view has to remember it. Goes first, after SecurityMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._refused(request):
            return HttpResponseBadRequest(
                gettext("请求中含有不允许的控制字符（NUL）。") + "\n", content_type="text/plain; charset=utf-8"
            )
        return self.get_response(request)

    @staticmethod
    def _refused(request: HttpRequest) -> bool:
        if _has_refused_character(request.path):
            return True
        for name, value in request.COOKIES.items():
            if _has_refused_character(name) or _has_refused_character(value):
                return True
        values: list[QueryDict] = [request.GET]
        # Only form bodies are parsed (urlencoded and multipart/form-data); any other body,
        # such as STOW-RS's multipart/related, is left unread for its view.
        if request.method == "POST" and request.content_type in FORM_CONTENT_TYPES:
            values.append(request.POST)
        for query in values:
            for name, items in query.lists():
                if _has_refused_character(name) or any(_has_refused_character(item) for item in items):
                    return True
        return False


FORM_CONTENT_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data"}


class ContentSecurityPolicyMiddleware:
    """Send CONTENT_SECURITY_POLICY (settings) with every HTML page that does not set its
    own: scripts only from the site's static files, so an injected <script> or inline
    handler does not run. Other responses (images, DICOM, exports, the viewer's workers)
    are not documents and go without it. CSP_REPORT_ONLY sends it as a report-only header,
    to try a change of policy on a running site before enforcing it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.header = "Content-Security-Policy-Report-Only" if settings.CSP_REPORT_ONLY else "Content-Security-Policy"
        self.policy = "; ".join(
            " ".join([directive, *sources]) for directive, sources in settings.CONTENT_SECURITY_POLICY.items()
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html") and self.header not in response:
            response[self.header] = self.policy_for(request)
        return response

    def policy_for(self, request: HttpRequest) -> str:
        """The policy, with the hashes of the <style> elements this page carries (the
        viewer's style sheets: cloudpacs.templatetags.inline_style) added to style-src:
        that text and no other inline style runs."""
        hashes = getattr(request, "csp_style_hashes", None)
        if not hashes:
            return self.policy
        policy = dict(settings.CONTENT_SECURITY_POLICY)
        policy["style-src"] = [*policy.get("style-src", ["'self'"]), *hashes]
        return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())
