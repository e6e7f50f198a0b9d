"""Error classes raised by services, and the one DRF handler that renders the error body.

Services raise `ClearhouseError` subclasses; views never build error dicts. Every error answers
`{"error": {"type", "code", "message", "param", "request_id", "doc_url"}}`; no stack trace
leaves the server. ERROR_CODES documents every code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
IDEMPOTENCY = "idempotency_error"
STATE = "state_error"
PROVIDER = "provider_error"
RATE_LIMIT = "rate_limit_error"
API = "api_error"


@dataclass(frozen=True)
class ErrorCode:
    """One documented `code`: the statuses it answers with and what the reader should do."""

    code: str
    statuses: tuple[int, ...]
    description: str
    in_api: bool = True  # False: shown by the back-office only, never in an API answer


# Refusals the back-office shows staff on its pages; no API answer carries them.
BACK_OFFICE_CODES = frozenset({"note_required", "form_already_submitted",
                               "dispute_reference_of_another_payment", "no_event", "no_endpoint",
                               "not_replayable", "approval_decided", "break_closed",
                               "dispute_decided_by_provider"})


def _codes(*rows: tuple[str, tuple[int, ...], str]) -> dict[str, ErrorCode]:
    return {code: ErrorCode(code, statuses, text, code not in BACK_OFFICE_CODES)
            for code, statuses, text in rows}


# Every `code` an error body can carry: the docs page (`doc_url`), docs/API.md and the OpenAPI
# error responses are all built from this table; tests/test_contract_errors.py fails when code
# raises a code that is not here. Providers add their decline codes (providers/apps.py).
ERROR_CODES: dict[str, ErrorCode] = _codes(
    ("parameter_invalid", (400,), "A parameter has the wrong type, format or range; `param` "
     "names it and `message` says what is allowed."),
    ("parameter_missing", (400,), "A required parameter is missing; `param` names it."),
    ("parameter_unknown", (400,), "The body has a parameter the operation does not take "
     "(nothing is mass-assigned); `param` names it."),
    ("invalid_request", (400,), "The request cannot be served as sent; `message` says why."),
    ("invalid_json", (400,), "The body is not one strict JSON object (UTF-8, no duplicate keys, "
     "nesting ≤ 32, integers ≤ 19 digits, no NUL or lone surrogate)."),
    ("card_data_not_allowed", (400,), "A card number was found in the request. Send a payment "
     "method token such as `pm_card_visa`; card data never reaches Clearhouse."),
    ("idempotency_key_invalid", (400,), "`Idempotency-Key` must be 1–255 printable ASCII "
     "characters."),
    ("api_version_invalid", (400,), "`Clearhouse-Version` names no API version; `message` "
     "lists the versions."),
    ("url_invalid", (400,), "The webhook URL is not an absolute http(s) URL we can call."),
    ("url_not_public", (400,), "The webhook URL resolves to a private, loopback or otherwise "
     "non-public address."),
    ("url_unresolvable", (400,), "The webhook URL's host does not resolve."),
    ("endpoint_limit_reached", (409,), "The account has the maximum number of webhook "
     "endpoints; delete one first."),
    ("resource_missing", (400, 404), "No such object for this account (another account's id "
     "is missing too). As 400, a list cursor names no object of the list."),
    ("amount_too_large", (400, 409), "The amount exceeds what the object allows now (the "
     "authorized amount, the refundable remainder, the disputable amount)."),
    ("amount_too_small", (400,), "The amount must exceed the current one (an incremental "
     "authorization's new total above `amount_authorized`)."),
    ("multicapture_unsupported", (400,), "The payment's provider takes one capture per "
     "authorization: capture with `final_capture` true."),
    ("incremental_authorization_unsupported", (409,), "The payment's provider does not raise "
     "an open authorization; create a further payment for the difference."),
    ("invalid_api_key", (401,), "No valid API key: send `Authorization: Bearer sk_test_…`."),
    ("permission_denied", (401,), "This API key may not perform this request."),
    ("method_not_allowed", (405,), "The path does not take this HTTP method."),
    ("not_acceptable", (406,), "The API answers application/json only."),
    ("invalid_state", (409,), "The object's state does not allow this operation."),
    ("payment_unexpected_state", (409,), "The payment's status does not allow this operation "
     "(capture an authorized payment, cancel a created or authorized one, …)."),
    ("payment_operation_in_progress", (409,), "A capture, cancel or authorization increment "
     "of this payment is still with the provider; retry when it has an outcome."),
    ("charge_already_refunded", (409,), "The payment is refunded in full (pending refunds "
     "included)."),
    ("dispute_closed", (409,), "The dispute no longer accepts evidence or closing."),
    ("insufficient_funds", (409,), "The available balance cannot cover the payout."),
    ("payment_method_detached", (409,), "The payment method was detached from its customer; "
     "it cannot be used."),
    ("payment_method_exists", (409,), "This token is already saved as a payment method."),
    ("payment_method_token_invalid", (400,), "The provider refused the payment method token "
     "(unknown, expired or not retrievable)."),
    ("endpoint_disabled", (409,), "The webhook endpoint is disabled; enable it first."),
    ("idempotency_key_in_use", (409,), "A request with this `Idempotency-Key` is still running; "
     "retry the same request later."),
    ("dispute_evidence_in_flight", (409,), "The dispute's evidence is already on its way to "
     "the provider; its answer is awaited."),
    ("dispute_not_at_provider", (409,), "The dispute has no provider case reference; contest "
     "it in the provider's portal."),
    ("file_invalid", (400,), "The uploaded file is incomplete or damaged (a truncated "
     "upload?); send the whole file."),
    ("file_type_not_allowed", (400,), "Evidence files must be PDF, PNG or JPEG, judged by "
     "their content."),
    ("file_too_large", (413,), "The uploaded file is over the evidence size limit."),
    ("request_too_large", (413,), "The body is over 16 KiB."),
    ("unsupported_media_type", (415,), "Send the body as `application/json` (UTF-8)."),
    ("idempotency_key_reused", (422,), "This `Idempotency-Key` was used with other "
     "parameters; use a new key for a new request."),
    ("rate_limited", (429,), "Too many requests with this API key; retry after `Retry-After` "
     "seconds."),
    ("internal_error", (500,), "A fault on our side, logged with the `request_id`; retrying "
     "with the same `Idempotency-Key` is safe."),
    ("provider_unavailable", (502,), "No provider can take the operation right now."),
    ("provider_declined", (502,), "The provider declined the operation."),
    ("provider_outcome_unknown", (502,), "The provider did not confirm the operation; "
     "reconciliation will resolve it. Retry only with the same `Idempotency-Key`."),
    ("webhook_rejected", (400, 401, 404, 413), "An inbound provider webhook was refused "
     "(unknown provider, bad signature, stale timestamp, malformed body)."),
    ("note_required", (400,), "This action needs a note saying why."),
    ("form_already_submitted", (409,), "This form was already submitted."),
    ("dispute_reference_of_another_payment", (409,), "The provider's dispute "
     "reference belongs to another payment."),
    ("no_event", (409,), "There is no event to resend."),
    ("no_endpoint", (409,), "No enabled endpoint is subscribed to the event."),
    ("not_replayable", (404, 409), "The inbound event cannot be replayed."),
    ("approval_decided", (404, 409), "The approval was already decided."),
    ("break_closed", (404, 409), "The reconciliation break is already closed."),
    ("dispute_decided_by_provider", (409,), "The provider decides this dispute (its evidence "
     "went through the provider's API); it cannot be recorded by hand."),
)


def error_codes_register(codes: dict[str, str], *, status: int) -> None:
    """Another layer's codes (a provider's decline codes), documented like core's."""
    for code, description in codes.items():
        known = ERROR_CODES.get(code)
        statuses = tuple(sorted({*(known.statuses if known else ()), status}))
        ERROR_CODES[code] = ErrorCode(code, statuses,
                                      known.description if known else description)


def api_codes_for_status(status: int) -> list[str]:
    """The codes an API answer with this status may carry."""
    return sorted(code for code, row in ERROR_CODES.items()
                  if row.in_api and status in row.statuses)


DOCS_PATH = "/api/docs/errors"


def doc_url(code: str, request: HttpRequest | None = None) -> str:
    """Where the code is explained: the error page this server serves (core.views)."""
    path = f"{DOCS_PATH}#{code}"
    if request is None:
        return path
    try:
        return request.build_absolute_uri(path)
    except Exception:  # a Host Django refuses: the path still leads there
        return path


class ClearhouseError(Exception):
    """Base of every error a client may see. Subclasses fix the HTTP status and error type."""

    status_code = 400
    type = INVALID_REQUEST
    code = "invalid_request"

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.param = param
        self.headers = headers or {}


class InvalidRequest(ClearhouseError):
    pass


class CardDataNotAllowed(InvalidRequest):
    code = "card_data_not_allowed"


class AuthenticationFailed(ClearhouseError):
    status_code = 401
    type = AUTHENTICATION
    code = "invalid_api_key"


class NotFound(ClearhouseError):
    status_code = 404
    code = "resource_missing"


class StateError(ClearhouseError):
    """A transition the current state does not allow, or an amount the state cannot cover."""

    status_code = 409
    type = STATE
    code = "invalid_state"


class InsufficientFunds(StateError):
    code = "insufficient_funds"


class IdempotencyInFlight(ClearhouseError):
    status_code = 409
    type = IDEMPOTENCY
    code = "idempotency_key_in_use"


class IdempotencyMismatch(ClearhouseError):
    status_code = 422
    type = IDEMPOTENCY
    code = "idempotency_key_reused"


class PayloadTooLarge(ClearhouseError):
    status_code = 413
    code = "request_too_large"


class UnsupportedMediaType(ClearhouseError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimited(ClearhouseError):
    status_code = 429
    type = RATE_LIMIT
    code = "rate_limited"


class ProviderError(ClearhouseError):
    status_code = 502
    type = PROVIDER
    code = "provider_unavailable"


def error_body(
    *, type: str, code: str, message: str, param: str | None, request: HttpRequest | None
) -> dict[str, Any]:
    return {
        "error": {
            "type": type,
            "code": code,
            "message": message,
            "param": param,
            "request_id": request_id_of(request),
            "doc_url": doc_url(code, request),
        }
    }


def request_id_of(request: HttpRequest | None) -> str | None:
    return getattr(request, "request_id", None) if request is not None else None


def json_error(request: HttpRequest, err: ClearhouseError) -> JsonResponse:
    """For middleware, which runs outside DRF: the same body the DRF handler renders."""
    response = JsonResponse(
        error_body(type=err.type, code=err.code, message=err.message, param=err.param,
                   request=request),
        status=err.status_code,
    )
    for name, value in err.headers.items():
        response[name] = value
    return response


def _first_validation_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str]:
    """Flatten DRF's nested ValidationError detail to (param, message, code) of the first error."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            param = key if key != "non_field_errors" else None
            if prefix and param:
                param = f"{prefix}[{param}]"
            elif prefix:
                param = prefix
            p, message, code = _first_validation_error(value, param or "")
            return p or param, message, code
    if isinstance(detail, list) and detail:
        return _first_validation_error(detail[0], prefix)
    code = getattr(detail, "code", "invalid") or "invalid"
    return (prefix or None), str(detail), str(code)


def _translate(exc: Exception) -> ClearhouseError | None:
    if isinstance(exc, ClearhouseError):
        return exc
    if isinstance(exc, drf_exceptions.ValidationError):
        param, message, code = _first_validation_error(exc.detail)
        codes = {"required": "parameter_missing", "unknown_field": "parameter_unknown"}
        return InvalidRequest(message, code=codes.get(code, "parameter_invalid"), param=param)
    if isinstance(exc, drf_exceptions.ParseError):
        return InvalidRequest(f"The request body is not valid JSON: {exc.detail}",
                              code="invalid_json")
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return UnsupportedMediaType("Send the body as application/json.")
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        return AuthenticationFailed(
            "No valid API key provided. Send `Authorization: Bearer sk_test_…`."
        )
    if isinstance(exc, (Http404, drf_exceptions.NotFound)):
        return NotFound("No such object.")
    if isinstance(exc, (PermissionDenied, drf_exceptions.PermissionDenied)):
        return AuthenticationFailed("This API key may not perform this request.",
                                    code="permission_denied")
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        err = InvalidRequest(str(exc.detail), code="method_not_allowed")
        err.status_code = 405
        return err
    if isinstance(exc, drf_exceptions.NotAcceptable):
        err = InvalidRequest(str(exc.detail), code="not_acceptable")
        err.status_code = 406
        return err
    if isinstance(exc, drf_exceptions.Throttled):
        wait = int(exc.wait or 1)
        return RateLimited("Too many requests; slow down.", headers={"Retry-After": str(wait)})
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    request = context.get("request")
    err = _translate(exc)
    if err is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        err = ClearhouseError("An internal error occurred; it has been logged.")
        err.status_code = 500
        err.type = API
        err.code = "internal_error"
    body = error_body(type=err.type, code=err.code, message=err.message, param=err.param,
                      request=request)
    response = Response(body, status=err.status_code)
    for name, value in err.headers.items():
        response[name] = value
    if isinstance(exc, drf_exceptions.APIException):
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            response["WWW-Authenticate"] = auth_header
    return response


def violated_constraint(exc: Exception) -> str:
    """The PostgreSQL constraint an IntegrityError broke ("" when psycopg did not say)."""
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", "") or ""
