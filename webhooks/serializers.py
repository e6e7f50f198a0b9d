"""API shapes for events, webhook endpoints and deliveries: strict input, plain-dict output."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.payloads import unix
from core.serializers import StrictSerializer
from webhooks.models import WILDCARD, WebhookDelivery, WebhookDeliveryAttempt

MAX_ENABLED_EVENTS = 100
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


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


@extend_schema_field(OpenApiTypes.INT)
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


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class EnabledEventsField(serializers.Field):
    """A non-empty list of event types (`payment.captured`), or `["*"]` for all of them."""

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError(
                'enabled_events must be a non-empty list of event types, or ["*"].')
        if len(data) > MAX_ENABLED_EVENTS:
            raise serializers.ValidationError(
                f"enabled_events may list at most {MAX_ENABLED_EVENTS} types.")
        types: list[str] = []
        for item in data:
            if not isinstance(item, str) or not (
                item == WILDCARD or (len(item) <= 64 and _EVENT_TYPE.match(item))
            ):
                raise serializers.ValidationError(
                    f"{item!r} is not an event type such as \"payment.captured\".")
            if item not in types:
                types.append(item)
        if WILDCARD in types and len(types) > 1:
            raise serializers.ValidationError('"*" already covers every type; send it alone.')
        return types


class WebhookEndpointCreateInput(StrictSerializer):
    url = serializers.CharField(max_length=2048, trim_whitespace=False)
    enabled_events = EnabledEventsField()
    description = serializers.CharField(max_length=500, required=False, allow_blank=True,
                                        default="")


class WebhookEndpointUpdateInput(StrictSerializer):
    url = serializers.CharField(max_length=2048, trim_whitespace=False, required=False)
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
