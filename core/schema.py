"""The OpenAPI contract's shared parts, added once for every operation: API-key auth, the
`Clearhouse-Version` and `Idempotency-Key` headers, the response headers, error bodies whose
`code` lists the codes each status can carry (core.errors.ERROR_CODES), links from each create to
the operations that take its id, and the event catalogue (core.events) as OpenAPI 3.1 webhooks."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from drf_spectacular.drainage import reset_generator_stats
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import (
    build_root_object,
    get_doc,
    normalize_result_object,
    process_webhooks,
    sanitize_result_object,
)
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import (
    OpenApiResponse,
    OpenApiWebhook,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers

from core import versions
from core.errors import ERROR_CODES, api_codes_for_status
from core.events import EventType, event_types

API_PREFIX = "/api/v1/"
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"


class ClearhouseAutoSchema(AutoSchema):
    """Describes an operation by its own view's docstring or `description` only, never one
    inherited from ApiView (which says how every view works, not what this one does)."""

    def get_description(self) -> str:
        method = getattr(self.view, getattr(self.view, "action", None) or self.method.lower(),
                         None)
        own = self.view.__class__.__dict__.get("__doc__")
        return get_doc(method) or (get_doc(self.view.__class__) if own else "")


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk_test_… / sk_live_…",
                "description": "A secret API key: `Authorization: Bearer sk_test_…`."}


# -- the event catalogue as webhooks ---------------------------------------------------------
def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._]", name))


def _event_data(object_name: str, serializer: type) -> serializers.Serializer:
    """`{"object": …}`: one component per object, shared by its event types (a fresh instance
    each time: a serializer instance is bound to the first parent it is used in)."""
    return _event_data_class(object_name, serializer)()


@cache
def _event_data_class(object_name: str, serializer: type) -> type:
    return type(inline_serializer(f"{_camel(object_name)}EventData", fields={
        "object": serializer(help_text=f"The {object_name.replace('_', ' ')} right after the "
                                       "change, in the endpoint's API version."),
    }))


def _constant(value: str, help_text: str = "") -> serializers.Field:
    """A string that is always `value` (inline, not one more shared enum component). A class
    per value: DRF copies declared fields by re-instantiating their class."""
    field_class = extend_schema_field({"type": "string", "const": value})(
        type("ConstantField", (serializers.CharField,), {}))
    return field_class(help_text=help_text)


EVENT_FIELDS = ("id", "object", "type", "api_version", "created", "data")


def event_payload_serializer(event_type: EventType) -> type:
    """The body a webhook delivers for one event type (webhooks.payloads.event_to_dict)."""
    return inline_serializer(f"{_camel(event_type.name)}Event", fields={
        "id": serializers.CharField(help_text="evt_…: de-duplicate deliveries on it"),
        "object": _constant("event"),
        "type": _constant(event_type.name, event_type.description),
        "api_version": serializers.CharField(help_text="The API version `data` is rendered in: "
                                                       "the endpoint's pinned version."),
        "created": serializers.IntegerField(help_text="Unix seconds"),
        "data": _event_data(event_type.object, event_type.serializer),
    })


def catalogue_webhooks() -> list[OpenApiWebhook]:
    received = OpenApiResponse(description="Received. Any other answer (or none within 5 s) is "
                                           "retried with backoff for up to 3 days.")
    return [OpenApiWebhook(name=event_type.name, decorator=extend_schema(
        operation_id=f"webhook_{event_type.name.replace('.', '_')}",
        summary=event_type.name, description=event_type.description, tags=["events"],
        request=event_payload_serializer(event_type), responses={200: received},
    )) for event_type in event_types()]


class ClearhouseSchemaGenerator(SchemaGenerator):
    """drf-spectacular's generator, with the webhooks read from the event catalogue when the
    schema is built (apps register their event types at start-up; the WEBHOOKS setting is a
    fixed list of import paths)."""

    def get_schema(self, request: Any = None, public: bool = False) -> dict[str, Any]:
        reset_generator_stats()
        paths = self.parse(request, public)
        webhooks = process_webhooks(catalogue_webhooks(), self.registry)
        for event_type in event_types():  # DRF orders inline fields by creation, not as listed
            component = self.registry[(f"{_camel(event_type.name)}Event", "schemas")]
            properties = component.schema["properties"]
            component.schema["properties"] = {name: properties[name] for name in EVENT_FIELDS}
        result = build_root_object(
            paths=paths, components=self.registry.build(spectacular_settings.APPEND_COMPONENTS),
            webhooks=webhooks, version=self.api_version or getattr(request, "version", None))
        for hook in spectacular_settings.POSTPROCESSING_HOOKS:
            result = hook(result=result, generator=self, request=request, public=public)
        return sanitize_result_object(normalize_result_object(result))


# -- the shared parts of every operation (a postprocessing hook) -------------------------------
HEADER = {"type": "string"}
RESPONSE_HEADERS = {
    "Request-Id": {"description": "This request's id (`req_…`); quote it to support.",
                   "schema": {"type": "string", "pattern": "^req_[A-Za-z0-9]+$"},
                   "required": True},
    "Clearhouse-Version": {"description": "The API version this response is rendered in.",
                           "schema": {"$ref": "#/components/schemas/ApiVersion"},
                           "required": True},
    "RateLimit-Limit": {"description": "The key's bucket size for this kind of request (absent "
                                       "when rate limiting is off).",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "RateLimit-Remaining": {"description": "Requests left in the bucket.",
                            "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "RateLimit-Reset": {"description": "Seconds until a request is available again.",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"}},
}
RETRY_AFTER = {"description": "Seconds to wait before retrying.",
               "schema": {"type": "string", "pattern": "^[0-9]+$"}, "required": True}
REPLAYED = {"description": "`true` when this is the stored answer to an earlier request with "
                           "the same `Idempotency-Key`.",
            "schema": {"type": "string", "enum": ["true"]}}
VERSION_PARAMETER = {
    "in": "header", "name": "Clearhouse-Version", "required": False,
    "description": "Render this request in another API version than the account's pinned one "
                   "(see the changelog in docs/API.md). Unknown versions are 400 "
                   "`api_version_invalid`.",
    "schema": {"$ref": "#/components/schemas/ApiVersion"},
}
IDEMPOTENCY_PARAMETER = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "description": "1–255 printable ASCII characters. A retry with the same key and body "
                   "replays the first response (header `Idempotent-Replayed: true`); other "
                   "parameters with the same key are 422; while the first still runs, 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255,
               "pattern": IDEMPOTENCY_KEY_PATTERN},
}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404:
               "invalid_request_error", 405: "invalid_request_error", 406:
               "invalid_request_error", 409: None, 413: "invalid_request_error", 415:
               "invalid_request_error", 422: "idempotency_error", 429: "rate_limit_error",
               500: "api_error", 502: "provider_error"}


def _error_schema(status: int) -> dict[str, Any]:
    codes = api_codes_for_status(status)
    types = ([ERROR_TYPES[status]] if ERROR_TYPES.get(status) else
             ["state_error", "idempotency_error"])
    return {"type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "additionalProperties": False,
                "required": ["type", "code", "message", "param", "request_id", "doc_url"],
                "properties": {
                    "type": {"type": "string", "enum": types},
                    "code": {"type": "string", "enum": codes,
                             "description": " ".join(f"`{code}`: {ERROR_CODES[code].description}"
                                                     for code in codes)},
                    "message": {"type": "string", "description": "For a person: what went "
                                                                 "wrong and how to fix it."},
                    "param": {"type": ["string", "null"],
                              "description": "The parameter at fault (`metadata[key]` for a "
                                             "nested one), or null."},
                    "request_id": {"type": ["string", "null"]},
                    "doc_url": {"type": "string", "description": "This code's documentation."},
                }}}}


# Each create, and the operations that take the id it answers with (links for stateful tools
# and generated clients). `parameters` name the target's parameter; `body` its body field.
LINKS: dict[str, dict[str, dict[str, str]]] = {
    "payments_create": {
        "payments_retrieve": {"payment_id": "id"}, "payments_confirm": {"payment_id": "id"},
        "payments_capture": {"payment_id": "id"}, "payments_cancel": {"payment_id": "id"},
        "refunds_create": {"body.payment": "id"}, "refunds_list": {"payment": "id"},
        "disputes_list": {"payment": "id"}, "events_list": {"object_id": "id"},
    },
    "payments_confirm": {"payments_capture": {"payment_id": "id"},
                         "payments_retrieve": {"payment_id": "id"}},
    "payments_capture": {"refunds_create": {"body.payment": "id"}},
    "refunds_create": {"refunds_retrieve": {"refund_id": "id"},
                       "events_list": {"object_id": "id"}},
    "deposits_create": {"deposits_retrieve": {"deposit_id": "id"}},
    "payouts_create": {"payouts_retrieve": {"payout_id": "id"},
                       "balance_transactions_list": {"payout": "id"}},
    "webhook_endpoints_create": {
        "webhook_endpoints_retrieve": {"endpoint_id": "id"},
        "webhook_endpoints_update": {"endpoint_id": "id"},
        "webhook_endpoints_delete": {"endpoint_id": "id"},
        "webhook_endpoints_rotate_secret": {"endpoint_id": "id"},
        "webhook_endpoints_deliveries": {"endpoint_id": "id"},
    },
}


def _link(target: str, mapping: dict[str, str]) -> dict[str, Any]:
    link: dict[str, Any] = {"operationId": target}
    for name, field in mapping.items():
        expression = f"$response.body#/{field}"
        if name.startswith("body."):
            link.setdefault("requestBody", {})[name.removeprefix("body.")] = expression
        else:
            link.setdefault("parameters", {})[name] = expression
    return link


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool
                ) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the parts every operation shares."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    result["components"]["headers"] = {**RESPONSE_HEADERS, "Retry-After": RETRY_AFTER,
                                       "Idempotent-Replayed": REPLAYED}
    result["components"]["parameters"] = {"ClearhouseVersion": VERSION_PARAMETER,
                                          "IdempotencyKey": IDEMPOTENCY_PARAMETER}
    schemas["ApiVersion"] = {"type": "string", "enum": versions.VERSIONS,
                             "description": "A dated API version (docs/API.md lists changes)."}
    operations = {op["operationId"]: op for path, item in result.get("paths", {}).items()
                  if path.startswith(API_PREFIX) for op in item.values()}
    for method_item in [item for path, item in result.get("paths", {}).items()
                        if path.startswith(API_PREFIX)]:
        for method, operation in method_item.items():
            _operation(operation, is_post=method == "post", schemas=schemas)
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False  # core.serializers.StrictSerializer: 400
    _prune_unreferenced(result)
    for source, targets in LINKS.items():
        operation = operations.get(source)
        if operation is None:
            continue
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                response["links"] = {target: _link(target, mapping)
                                     for target, mapping in targets.items()
                                     if target in operations}
    return result


def _prune_unreferenced(result: dict[str, Any]) -> None:
    """Drop component schemas nothing refers to any more (the generic error body the shared
    error responses replaced), so generated clients get no dead models."""
    schemas = result["components"]["schemas"]
    while True:
        found: set[str] = set()
        _collect_refs(result, found)
        unused = [name for name in schemas if f"#/components/schemas/{name}" not in found]
        if not unused:
            return
        for name in unused:
            del schemas[name]


def _collect_refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.add(node["$ref"])
        for value in node.values():
            _collect_refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect_refs(value, found)


PRINTABLE_ASCII = r"^[\x20-\x7e]*$"  # core.middleware refuses anything else in a query string


def _operation(operation: dict[str, Any], *, is_post: bool, schemas: dict[str, Any]) -> None:
    parameters = [p for p in operation.get("parameters", [])
                  if p.get("name") not in ("Idempotency-Key", "Clearhouse-Version")]
    for parameter in parameters:
        schema = parameter.get("schema", {})
        if (parameter.get("in") in ("query", "path") and schema.get("type") == "string"
                and "enum" not in schema and "pattern" not in schema):
            schema["pattern"] = PRINTABLE_ASCII
    parameters.append({"$ref": "#/components/parameters/ClearhouseVersion"})
    if is_post:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    operation["parameters"] = parameters
    for status, response in operation.get("responses", {}).items():
        code = int(status)
        names = [*RESPONSE_HEADERS, *(["Retry-After"] if code == 429 else []),
                 *(["Idempotent-Replayed"] if is_post else [])]
        response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in names}
        if code >= 400:
            name = f"Error{code}"
            schemas.setdefault(name, _error_schema(code))
            for media in response.get("content", {}).values():
                media["schema"] = {"$ref": f"#/components/schemas/{name}"}
