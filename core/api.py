"""Base API view: authentication, idempotent POSTs, strict input, and documented errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.urls import URLPattern, path
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import metrics, ratelimit, versions
from core.errors import InvalidRequest, RateLimited
from core.idempotency import IdempotentMixin
from core.pagination import paginate


class ErrorDetailSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=[
        "invalid_request_error", "authentication_error", "idempotency_error", "state_error",
        "provider_error", "rate_limit_error", "api_error",
    ])
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    request_id = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def list_of(item: type[serializers.Serializer], name: str) -> serializers.Serializer:
    """The OpenAPI shape of a cursor-paginated list: {object: "list", data: [item…], has_more}."""
    return inline_serializer(name, fields={
        "object": serializers.CharField(default="list"),
        "data": item(many=True),
        "has_more": serializers.BooleanField(),
    })


def _error(description: str, type: str, code: str, message: str, param: str | None = None,
           *, name: str | None = None) -> OpenApiResponse:
    """A documented error answer, with an example body of that type, code, message and param."""
    example = {"type": type, "code": code, "message": message, "param": param,
               "request_id": "req_…"}
    return OpenApiResponse(ErrorSerializer, description=description, examples=[
        OpenApiExample(name or description, value={"error": example}, response_only=True)
    ])


# What the request guard (core.middleware, core.parsers) refuses before any view runs.
STRICT_INPUT = (
    "Invalid request. A body is one strict JSON object: UTF-8, no duplicate keys, nesting at "
    "most 32 deep, integers of at most 19 digits, finite numbers, no NUL or unpaired surrogate "
    "(`invalid_json`). Query parameters are printable ASCII. A card number anywhere, after "
    "decoding (keys, values, numbers, query strings), is `card_data_not_allowed`."
)


ERRORS = {
    400: _error(STRICT_INPUT, "invalid_request_error", "parameter_invalid",
                "Amount must be between 1 and 99999999999.", "amount", name="Invalid request"),
    429: _error("Rate limited (see Retry-After)", "rate_limit_error", "rate_limited",
                "Too many requests with this API key; retry after the Retry-After seconds."),
    401: _error("Missing or invalid API key", "authentication_error", "invalid_api_key",
                "Invalid or revoked API key."),
    404: _error("Not found (or another merchant's object)", "invalid_request_error",
                "resource_missing", "No such payment: 'pay_…'.", "id"),
}
POST_ERRORS = {
    **ERRORS,
    409: _error("Invalid state, or the same Idempotency-Key still in flight", "state_error",
                "payment_unexpected_state",
                "This payment is 'canceled'; it cannot be captured.", "status"),
    413: _error("Body over 16 KiB", "invalid_request_error", "request_too_large",
                "Request bodies are limited to 16384 bytes."),
    415: _error("Body not application/json (UTF-8, no other charset)", "invalid_request_error",
                "unsupported_media_type", "Send the body as application/json.",
                name="Body not JSON"),
    502: _error("The provider declined or did not answer an operation made synchronously",
                "provider_error", "provider_outcome_unknown",
                "The provider did not confirm the capture; its outcome is unknown."),
    422: _error("Idempotency-Key reused with different parameters", "idempotency_error",
                "idempotency_key_reused",
                "This Idempotency-Key was already used with different parameters.",
                "Idempotency-Key"),
}
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", location=OpenApiParameter.HEADER, required=False,
    description="1–255 printable characters. A retry with the same key and body replays the "
                "first response (header `Idempotent-Replayed: true`).",
)
LIST_PARAMETERS = [
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                     description="1–100, default 10 (ASCII digits)"),
    OpenApiParameter("starting_after", str, description="Cursor: an object id from this list"),
    OpenApiParameter("ending_before", str, description="Cursor: an object id from this list"),
]


class RateLimitedMixin:
    """Takes a token from the API key's read or write bucket before the view runs."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authenticate first: buckets are per key
        decision = ratelimit.check(key_id=request.auth.pk,
                                   is_write=request.method not in ("GET", "HEAD", "OPTIONS"))
        self._rate_limit_headers = ratelimit.headers(decision) if decision else {}
        if decision is not None and not decision.allowed:
            metrics.RATE_LIMITED.labels("write" if request.method == "POST" else "read").inc()
            raise RateLimited(
                "Too many requests with this API key; retry after the Retry-After seconds.",
                headers=self._rate_limit_headers,
            )

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any):
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in getattr(self, "_rate_limit_headers", {}).items():
            response[name] = value
        return response


class VersionedMixin:
    """The API version of the request: `Clearhouse-Version` when sent, else the merchant's
    pinned one. Responses are built in the newest shape and rendered in that version
    (core.versions); every response says which version it is in."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # the merchant is known after this
        self.api_version = requested_version(request) or request.user.api_version

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any):
        response = super().finalize_response(request, response, *args, **kwargs)
        version = getattr(self, "api_version", None)
        if version is None:  # refused before the merchant was known (401, 400 on the header)
            raw = request.META.get(versions.META_HEADER, "")
            version = raw if versions.is_version(raw) else versions.LATEST
        elif response.status_code < 400 and isinstance(getattr(response, "data", None),
                                                       dict | list):  # not a file download
            response.data = versions.render(response.data, version=version)
        response[versions.HEADER] = version
        return response


def requested_version(request: Request) -> str | None:
    """The version named by the request's header, None when absent; 400 when unknown."""
    raw = request.META.get(versions.META_HEADER)
    if raw is None:
        return None
    if not versions.is_version(raw):
        shown = raw[:40] if raw.isascii() and raw.isprintable() else "(not printable ASCII)"
        raise InvalidRequest(
            f"Unknown {versions.HEADER} {shown!r}; the API versions are "
            f"{', '.join(versions.VERSIONS)}.", code="api_version_invalid",
            param=versions.HEADER)
    return raw


class ApiView(IdempotentMixin, VersionedMixin, RateLimitedMixin, APIView):
    """Every API view: merchant authentication, rate limits, the API version, Idempotency-Key
    on POST, strict JSON input."""

    def validated(self, serializer_class: type[serializers.Serializer], request: Request
                  ) -> dict[str, Any]:
        data = request.data if request.body else {}
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def query(self, serializer_class: type[serializers.Serializer], request: Request
              ) -> dict[str, Any]:
        """The query string's parameters, validated (a list's filters)."""
        # A plain dict: DRF reads a QueryDict as an HTML form, where "" means "not sent".
        serializer = serializer_class(data=request.query_params.dict())
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data



# The reads most resources share. A view names its selector, its payload builder and its output
# shape, and the class writes `get` with its schema: operation `<plural>_retrieve` or
# `<plural>_list`, the list documented as `<Name>List`. (Comments, not docstrings: drf-spectacular
# would describe each operation with a docstring.)
Render = Callable[[Any], dict[str, Any]]


class RetrieveView(ApiView):
    # GET one of the merchant's objects by the id in the URL (404 for another merchant's).
    def __init_subclass__(cls, *, plural: str, output: type[serializers.Serializer],
                          selector: Callable[..., Any], render: Render, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

        @extend_schema(operation_id=f"{plural}_retrieve", responses={200: output, **ERRORS})
        def get(self: ApiView, request: Request, **url_ids: str) -> Response:
            return Response(render(selector(merchant=request.user, **url_ids)))

        cls.get = get


class ListView(ApiView):
    # GET a page of the merchant's objects. `passed` hands query parameters to the selector as
    # given ({param: argument}); `filters` validates the query string into its arguments.
    # With `create` (a service) and its `create_input`, POST creates one, answering 200.
    def __init_subclass__(cls, *, plural: str, output: type[serializers.Serializer],
                          selector: Callable[..., Any], render: Render,
                          passed: dict[str, str] | None = None,
                          filters: type[serializers.Serializer] | None = None,
                          parameters: Sequence[OpenApiParameter] = (),
                          create: Callable[..., Any] | None = None,
                          create_input: type[serializers.Serializer] | None = None,
                          create_description: str | None = None,
                          operation_id: str | None = None, list_name: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        passed = passed or {}
        # The filters serializer documents itself (types, enums, formats): what validates the
        # query string is what the schema says.
        documented = [*LIST_PARAMETERS, *(OpenApiParameter(param, str) for param in passed),
                      *([filters] if filters is not None else []), *parameters]
        list_name = list_name or output.__name__.removesuffix("Output") + "List"

        @extend_schema(operation_id=operation_id or f"{plural}_list", parameters=documented,
                       responses={200: list_of(output, list_name), **ERRORS})
        def get(self: ApiView, request: Request, **url_ids: str) -> Response:
            arguments = {argument: request.query_params.get(param)
                         for param, argument in passed.items()}
            if filters is not None:
                arguments.update(self.query(filters, request))
            rows = selector(merchant=request.user, **url_ids, **arguments)
            return Response(paginate(rows, request, render))

        cls.get = get
        if create is None:
            return

        @extend_schema(operation_id=f"{plural}_create", request=create_input,
                       parameters=[IDEMPOTENCY_HEADER], responses={200: output, **POST_ERRORS},
                       description=create_description)
        def post(self: ApiView, request: Request) -> Response:
            data = self.validated(create_input, request)
            return Response(render(create(merchant=request.user, **self.idempotency(request),
                                          **data)))

        cls.post = post


def resource_urls(plural: str, id_name: str, *, collection: type[APIView] | None = None,
                  detail: type[APIView] | None = None, **actions: type[APIView]
                  ) -> list[URLPattern]:
    """A resource's routes in the API's one URL shape: `<plural>` (list, create),
    `<plural>/<id>` (retrieve, update, delete) and `<plural>/<id>/<action>` (one POST each)."""
    one = f"{plural}/<str:{id_name}>"
    routes = [path(plural, collection.as_view())] if collection is not None else []
    if detail is not None:
        routes.append(path(one, detail.as_view()))
    return routes + [path(f"{one}/{action}", view.as_view()) for action, view in actions.items()]
