"""Sessions that end after a spell of inactivity.

A signed-in session lives SESSION_COOKIE_AGE (SESSION_IDLE_MINUTES) from its last save.
Saving it on every request would renew it, but also write the session row for every
image tile the viewer fetches with the session cookie; so it is renewed at most once per
RENEW_EVERY seconds, which moves the idle limit by less than a minute."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse

RENEWED_AT = "_renewed_at"
RENEW_EVERY = 60


class IdleSessionMiddleware:
    """Renew a signed-in session's expiry as the user works. Goes after SessionMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = request.session
        if SESSION_KEY in session:
            now = int(time.time())
            interval = min(RENEW_EVERY, settings.SESSION_COOKIE_AGE // 2)
            if now - int(session.get(RENEWED_AT, 0)) >= interval:
                # Marks the session modified: SessionMiddleware saves it with a new expiry.
                session[RENEWED_AT] = now
        return self.get_response(request)
