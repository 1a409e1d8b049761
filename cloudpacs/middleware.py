"""Request middleware of the project."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.middleware.locale import LocaleMiddleware
from django.utils import translation


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
