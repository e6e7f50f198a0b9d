"""Request ids on every response, and the guards that run before any view sees a body:
bodies over 16 KiB answer 413 and card numbers answer 400 `card_data_not_allowed`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.carddata import contains_card_number
from core.errors import CardDataNotAllowed, InvalidRequest, PayloadTooLarge, json_error
from core.ids import new_id

logger = logging.getLogger(__name__)
GUARDED_PREFIXES = ("/api/", "/webhooks/")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = new_id("req")
        response = self.get_response(request)
        response["Request-Id"] = request.request_id
        return response


class RequestGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(GUARDED_PREFIXES):
            rejection = self._check_text(request)
            if rejection is None and request.method in ("POST", "PUT", "PATCH"):
                rejection = self._check_body(request)
            if rejection is not None:
                return rejection
        return self.get_response(request)

    def _check_text(self, request: HttpRequest) -> HttpResponse | None:
        """NUL characters cannot be stored in PostgreSQL text: refuse them up front (400), rather
        than let a lookup fail deep inside with a 500."""
        if "\x00" in request.path:
            return json_error(request, InvalidRequest("The path contains a NUL character."))
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                return json_error(request, InvalidRequest(
                    f"Query parameter {name!r} contains a NUL character.", param=name))
        return None

    def _check_body(self, request: HttpRequest) -> HttpResponse | None:
        limit = settings.MAX_REQUEST_BODY_BYTES
        too_large = PayloadTooLarge(f"Request bodies are limited to {limit} bytes.")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return json_error(request, too_large)
        # The WSGI stream is limited to Content-Length, so this reads at most `limit` bytes.
        body = request.body
        text = body.decode("utf-8", errors="replace")
        if "\x00" in text or "\\u0000" in text:
            return json_error(request, InvalidRequest(
                "The body contains a NUL character (\\u0000), which cannot be stored."))
        if contains_card_number(text):
            # Never log the body: the point is that the number goes nowhere.
            logger.warning("rejected a request containing card data path=%s request_id=%s",
                           request.path, request.request_id)
            return json_error(request, CardDataNotAllowed(
                "Card numbers may not be sent to this API; use a payment method token such as "
                "`pm_card_visa`.",
            ))
        return None
