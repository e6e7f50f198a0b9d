"""Error classes raised by services, and the one DRF handler that renders the error body.

Services raise `ClearhouseError` subclasses; views never build error dicts. Every error answers
`{"error": {"type", "code", "message", "param", "request_id"}}`; no stack trace leaves
the server.
"""

from __future__ import annotations

import logging
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
    *, type: str, code: str, message: str, param: str | None, request_id: str | None
) -> dict[str, Any]:
    return {
        "error": {
            "type": type,
            "code": code,
            "message": message,
            "param": param,
            "request_id": request_id,
        }
    }


def request_id_of(request: HttpRequest | None) -> str | None:
    return getattr(request, "request_id", None) if request is not None else None


def json_error(request: HttpRequest, err: ClearhouseError) -> JsonResponse:
    """For middleware, which runs outside DRF: the same body the DRF handler renders."""
    response = JsonResponse(
        error_body(type=err.type, code=err.code, message=err.message, param=err.param,
                   request_id=request_id_of(request)),
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
                      request_id=request_id_of(request))
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
