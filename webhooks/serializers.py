"""API shapes for events, webhook endpoints and deliveries: strict input, plain-dict output."""

from __future__ import annotations

import difflib
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.events import event_type_get, event_types
from core.payloads import unix
from core.serializers import StrictSerializer
from webhooks.models import WILDCARD, WebhookDelivery, WebhookDeliveryAttempt

MAX_ENABLED_EVENTS = 100
MAX_OVERLAP_SECONDS = 7 * 24 * 3600


def attempt_to_dict(attempt: WebhookDeliveryAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started": int(attempt.started_at.timestamp()),
        "latency_ms": attempt.latency_ms,
        "status_code": attempt.status_code,
        "response_snippet": attempt.response_snippet,
        "error": attempt.error or None,
        "succeeded": attempt.is_success,
    }


def delivery_to_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    attempts = sorted(delivery.attempts.all(), key=lambda attempt: attempt.number)
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "endpoint": delivery.endpoint_id,
        "event": delivery.event_id,
        "event_type": delivery.event.type,
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "next_attempt": unix(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error or None,
        "created": int(delivery.created_at.timestamp()),
        "completed": unix(delivery.completed_at),
        "attempts": [attempt_to_dict(attempt) for attempt in attempts],
    }


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanField(serializers.Field):
    """Only JSON true/false: "false" as a string is a mistake worth a 400, not a guess."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError("Must be true or false.")
        return data


class StrictIntegerField(serializers.Field):
    def __init__(self, *, min_value: int, max_value: int, **kwargs: Any) -> None:
        self.min_value, self.max_value = min_value, max_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("Must be an integer.")
        if not self.min_value <= data <= self.max_value:
            raise serializers.ValidationError(
                f"Must be from {self.min_value} to {self.max_value}.")
        return data


class EnabledEventsField(serializers.Field):
    """A non-empty list of event types from the catalogue (core.events), or `["*"]` for all of
    them. A type the catalogue does not list is refused: a typo would never fire."""

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError(
                'enabled_events must be a non-empty list of event types, or ["*"].')
        if len(data) > MAX_ENABLED_EVENTS:
            raise serializers.ValidationError(
                f"enabled_events may list at most {MAX_ENABLED_EVENTS} types.")
        types: list[str] = []
        for item in data:
            if not isinstance(item, str):
                raise serializers.ValidationError(
                    f"{item!r} is not an event type such as \"payment.captured\".")
            if item != WILDCARD and event_type_get(item) is None:
                raise serializers.ValidationError(_unknown_type_message(item))
            if item not in types:
                types.append(item)
        if WILDCARD in types and len(types) > 1:
            raise serializers.ValidationError('"*" already covers every type; send it alone.')
        return types


def _unknown_type_message(item: str) -> str:
    names = [event_type.name for event_type in event_types()]
    shown = item if len(item) <= 64 and item.isprintable() else f"{item[:64]!r}…"
    close = difflib.get_close_matches(item, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (f"Unknown event type '{shown}' in enabled_events.{hint} The catalogue lists: "
            f"{', '.join(names)} (or \"*\" alone for every type).")


class StrictIntegerFieldSchema(OpenApiSerializerFieldExtension):
    """Its bounds, which are per instance."""

    target_class = StrictIntegerField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        field = self.target
        return {"type": "integer", "minimum": field.min_value, "maximum": field.max_value}


# What the schema promises a webhook URL looks like: http(s), a host name whose last label has a
# letter (not an IP address, which must be public, nor a numeric encoding of one), an optional
# port and path. Production also requires https, and every address the name resolves to must be
# public (webhooks.ssrf): that is checked when the endpoint is saved, not by a pattern.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_LAST_LABEL = r"[A-Za-z0-9_]{0,20}[A-Za-z](?:[A-Za-z0-9_-]{0,40}[A-Za-z0-9_])?"
_PORT = (r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
         r"|6553[0-5]))?")
WEBHOOK_URL_PATTERN = (rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_LABEL}\.)+{_LAST_LABEL}\.?{_PORT}"
                       r"(?:/[!\"$-~]*)?$")


class WebhookUrlField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=2048, trim_whitespace=False, **kwargs)


class WebhookUrlFieldSchema(OpenApiSerializerFieldExtension):
    target_class = WebhookUrlField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "string", "format": "uri", "maxLength": 2048,
                "pattern": WEBHOOK_URL_PATTERN,
                "description": "https (http outside production), a public host name; every "
                               "address it resolves to must be public."}


class EnabledEventsFieldSchema(OpenApiSerializerFieldExtension):
    """The catalogue as an enum, read when the schema is generated (apps register their types
    at start-up, after this module is imported)."""

    target_class = EnabledEventsField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        names = [event_type.name for event_type in event_types()]
        every = _component(auto_schema, "EventType", {
            "type": "string", "enum": names,
            "description": "An event type from the catalogue (the schema's `webhooks`)."})
        wildcard = _component(auto_schema, "EventTypeWildcard", {
            "type": "string", "enum": [WILDCARD], "description": "Every event type."})
        return {"oneOf": [
            {"type": "array", "items": every, "minItems": 1, "maxItems": MAX_ENABLED_EVENTS},
            {"type": "array", "items": wildcard, "minItems": 1, "maxItems": 1},
        ], "description": 'Event types from the catalogue, or `["*"]` alone for every type.'}


def _component(auto_schema: Any, name: str, schema: dict[str, Any]) -> dict[str, str]:
    component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name,
                                  schema=schema)
    auto_schema.registry.register_on_missing(component)
    return component.ref


class WebhookEndpointCreateInput(StrictSerializer):
    url = WebhookUrlField()
    enabled_events = EnabledEventsField()
    description = serializers.CharField(max_length=500, required=False, allow_blank=True,
                                        default="")


class WebhookEndpointUpdateInput(StrictSerializer):
    url = WebhookUrlField(required=False)
    enabled_events = EnabledEventsField(required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    disabled = StrictBooleanField(required=False)


class RotateSecretInput(StrictSerializer):
    expires_in = StrictIntegerField(
        min_value=0, max_value=MAX_OVERLAP_SECONDS, required=False,
        help_text="Seconds the old secret keeps signing (default 86400; 0 drops it now).")


class EventResendInput(StrictSerializer):
    endpoint = serializers.CharField(max_length=40, required=False,
                                     help_text="Only this endpoint (`we_…`); default: every "
                                               "enabled endpoint subscribed to the event type.")
