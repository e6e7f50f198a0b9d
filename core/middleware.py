"""Request ids on every response, and the guards that run before any view sees a request:
bodies over 16 KiB answer 413, card numbers anywhere answer 400 `card_data_not_allowed`, and
API bodies must be strict JSON objects (core.parsers) so nothing past here can fail on them."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core import versions
from core.carddata import contains_card_data, contains_card_number
from core.errors import (
    CardDataNotAllowed,
    ClearhouseError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    json_error,
)
from core.ids import new_id
from core.parsers import check_content_type, parse_json_object

logger = logging.getLogger(__name__)
API_PREFIX = "/api/"
# Provider webhooks: scanned for card numbers too, but their bodies belong to the provider's
# format (masked numbers such as 424242******4242 are fine) and are judged by webhooks.inbound.
WEBHOOK_PREFIX = "/webhooks/"
GUARDED_PREFIXES = (API_PREFIX, WEBHOOK_PREFIX)
# Ids, integers, ISO 8601 times and enum values are all printable ASCII: a lookalike digit
# (١٠, ², １) or a control character is refused here rather than half-parsed by a view.
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# The one client header we keep (in core_idempotencykey and on the row it creates): scanned as
# strictly as a body value. Other headers are not scanned: they are neither stored nor logged by
# the API, and provider headers carry 13-digit millisecond timestamps (Getnet's `t=`).
IDEMPOTENCY_HEADER = "HTTP_IDEMPOTENCY_KEY"
# Ids are a short prefix and 24 characters, so no object lives at a longer path; refusing here
# also keeps paths within what an idempotency record stores (300 characters).
MAX_API_PATH = 256
# The one method whose body an API view reads. Another method's body (PUT, TRACE, …) is only
# scanned as text, so the answer is the view's own (405 for a method it does not take).
BODY_METHODS = frozenset({"POST"})
# Evidence uploads (POST /api/v1/files) are multipart: the file plus the form's boundaries and
# its few short fields.
FILE_UPLOAD_PATH = "/api/v1/files"
FILE_UPLOAD_OVERHEAD = 16 * 1024


def _is_file_upload(request: HttpRequest) -> bool:
    return (request.method == "POST" and request.path == FILE_UPLOAD_PATH
            and request.META.get("CONTENT_TYPE", "").lower().startswith("multipart/form-data"))


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = new_id("req")
        response = self.get_response(request)
        response["Request-Id"] = request.request_id
        if request.path.startswith(API_PREFIX):
            # Answers made before a view knew the merchant (413, card data, a bad body): the
            # version asked for, else the newest (error bodies are the same in every version).
            asked = request.META.get(versions.META_HEADER, "")
            response.setdefault(versions.HEADER,
                                asked if versions.is_version(asked) else versions.LATEST)
        return response


def _card_data_rejection(request: HttpRequest) -> HttpResponse:
    # Never log the body or the query: the point is that the number goes nowhere.
    logger.warning("rejected a request containing card data path=%s request_id=%s",
                   request.path if not contains_card_number(request.path) else "[REDACTED_PAN]",
                   request.request_id)
    response = json_error(request, CardDataNotAllowed(
        "Card numbers may not be sent to this API; use a payment method token such as "
        "`pm_card_visa`.",
    ))
    # Django's own "Bad Request" line carries the request object, whose text is the full URL
    # with the query string: logged above already, so it is not logged again.
    response._has_been_logged = True
    return response


class RequestGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(GUARDED_PREFIXES):
            try:
                self._check_text(request)
                self._check_body(request)
            except CardDataNotAllowed:
                return _card_data_rejection(request)
            except ClearhouseError as err:
                return json_error(request, err)
        return self.get_response(request)

    def _check_text(self, request: HttpRequest) -> None:
        """NUL characters cannot be stored in PostgreSQL text: refuse them up front (400), rather
        than let a lookup fail deep inside with a 500. Query parameters are URL-decoded first,
        so `%34242…` is the card number it spells."""
        params = list(request.GET.lists())
        # Card data first: whatever else is wrong with the request, that is the answer, and no
        # other rejection gets logged (Django's "Bad Request" line shows the URL).
        if contains_card_data(params) or (
                request.path.startswith(API_PREFIX) and contains_card_number(request.path)):
            raise CardDataNotAllowed("card data")
        if "\x00" in request.path:
            raise InvalidRequest("The path contains a NUL character.")
        if request.path.startswith(API_PREFIX) and len(request.path) > MAX_API_PATH:
            raise NotFound(f"No such object: paths are at most {MAX_API_PATH} characters.")
        for name, values in params:
            if "\x00" in name or any("\x00" in value for value in values):
                raise InvalidRequest(f"Query parameter {name!r} contains a NUL character.",
                                     param=name)
        key = request.META.get(IDEMPOTENCY_HEADER)
        if isinstance(key, str) and contains_card_number(_header_text(key)):
            raise CardDataNotAllowed("card data")
        if request.path.startswith(API_PREFIX):
            for name, values in params:
                if not all(_PRINTABLE_ASCII.fullmatch(text) for text in (name, *values)):
                    raise InvalidRequest(
                        f"Query parameter {name!r} must be printable ASCII (digits 0-9).",
                        param=name if _PRINTABLE_ASCII.fullmatch(name) else None)

    def _check_body(self, request: HttpRequest) -> None:
        limit = settings.MAX_REQUEST_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if _is_file_upload(request):
            # The one multipart route: up to one evidence file plus its form's few fields. The
            # file's bytes are judged by the view (type by content, size); they are never
            # parsed as text, logged or scanned here. Its form fields are scanned by the view.
            upload_limit = settings.EVIDENCE_MAX_BYTES + FILE_UPLOAD_OVERHEAD
            if declared > upload_limit:
                raise PayloadTooLarge(f"Evidence files are limited to "
                                      f"{settings.EVIDENCE_MAX_BYTES} bytes.",
                                      code="file_too_large", param="file")
            return
        if declared > limit:
            raise PayloadTooLarge(f"Request bodies are limited to {limit} bytes.")
        # The WSGI stream is limited to Content-Length, so this reads at most `limit` bytes.
        body = request.body
        if not body:
            return
        if request.path.startswith(API_PREFIX) and request.method in BODY_METHODS:
            # JSON in: every API body is decoded once, strictly, and scanned after decoding
            # (keys and values at any depth, escapes such as \u0034 resolved). DRF's parser
            # reuses the result, and the idempotency fingerprint sees only valid JSON.
            check_content_type(request.META.get("CONTENT_TYPE", ""))
            decoded = parse_json_object(body)
            if contains_card_data(decoded):
                raise CardDataNotAllowed("card data")
            request.json_body = decoded
            return
        text = body.decode("utf-8", errors="replace")
        if request.path.startswith(API_PREFIX):  # a method whose body no view reads
            if contains_card_number(text):
                raise CardDataNotAllowed("card data")
            return
        if "\x00" in text or "\\u0000" in text:
            raise InvalidRequest(
                "The body contains a NUL character (\\u0000), which cannot be stored.")
        if contains_card_number(text) or contains_card_data(_decoded_or_none(body)):
            raise CardDataNotAllowed("card data")


def _header_text(value: str) -> str:
    """WSGI gives header bytes as latin-1; read them as the UTF-8 a client sends, so full-width
    or other non-ASCII digits are seen as digits (core.idempotency then refuses non-ASCII)."""
    try:
        return value.encode("latin-1").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return value


def _decoded_or_none(body: bytes) -> object:
    """A provider's body when it is strict JSON; otherwise the raw-text scan is all we can do,
    and webhooks.inbound decides whether the body is acceptable at all."""
    try:
        return parse_json_object(body)
    except ClearhouseError:
        return None
