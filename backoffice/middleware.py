"""Admin session expiry: after BACKOFFICE_SESSION_IDLE_SECONDS without a request, and after
SESSION_COOKIE_AGE since login however busy the session (Django alone only has the second, and
it slides with every saved request)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode

LOGIN_AT, SEEN_AT = "backoffice_login_at", "backoffice_seen_at"
SEEN_RESOLUTION = 60  # seconds: write the session at most once a minute for the idle clock


class StaffSessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not hasattr(request, "session"):
            return self.get_response(request)
        now = int(time.time())
        login_at = request.session.get(LOGIN_AT)
        seen_at = request.session.get(SEEN_AT)
        idle = now - seen_at if seen_at else 0
        age = now - login_at if login_at else 0
        if idle > settings.BACKOFFICE_SESSION_IDLE_SECONDS or age > settings.SESSION_COOKIE_AGE:
            minutes = (settings.BACKOFFICE_SESSION_IDLE_SECONDS // 60 if age <= (
                settings.SESSION_COOKIE_AGE) else settings.SESSION_COOKIE_AGE // 60)
            why = "without activity" if age <= settings.SESSION_COOKIE_AGE else "since login"
            logout(request)
            messages.warning(request, f"Your session ended after {minutes} minutes {why}. "
                                      "Log in again to continue.")
            return HttpResponseRedirect(
                f"{reverse('admin:login')}?{urlencode({'next': request.get_full_path()})}")
        if login_at is None:
            request.session[LOGIN_AT] = now
        if seen_at is None or now - seen_at >= SEEN_RESOLUTION:
            request.session[SEEN_AT] = now
        return self.get_response(request)
