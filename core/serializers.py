"""Serializer building blocks: strict input (unknown fields are 400) and money fields."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.carddata import contains_card_number
from core.money import CURRENCIES, MAX_AMOUNT


class SharedFields(serializers.Serializer):
    """A family's shared fields, declared once, in the order the family's bodies have them.

    A subclass's own fields stand right after the shared field named `own_fields_after` (not at
    the end, where inheritance would put them), and a shared field it redeclares keeps its
    place. The order is the schema's and the order in which input errors are reported."""

    own_fields_after: str

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        family = next(klass for klass in type(self).__mro__ if "own_fields_after" in vars(klass))
        shared = list(family._declared_fields)
        cut = shared.index(family.own_fields_after) + 1
        own = [name for name in fields if name not in shared]
        return {name: fields[name] for name in [*shared[:cut], *own, *shared[cut:]]}


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not declare, so nothing is mass-assigned by accident."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["The request body must be a JSON object."]}
            )
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {unknown[0]: [serializers.ErrorDetail(
                    f"Received unknown parameter: {unknown[0]}.", code="unknown_field")]}
            )
        return super().to_internal_value(data)


@extend_schema_field({"type": "integer", "format": "int64", "minimum": 1,
                     "maximum": MAX_AMOUNT, "example": 1050})
class AmountField(serializers.Field):
    """A positive integer in minor units. Floats, strings, booleans and exponents are refused."""

    default_error_messages = {
        "type": "Amount must be a positive integer in the currency's minor unit "
                "(1050 for $10.50), not {kind}.",
        "range": f"Amount must be between 1 and {MAX_AMOUNT}.",
    }

    def to_internal_value(self, data: Any) -> int:
        # bool is a subclass of int, and JSON 1e20 / 10.5 arrive as float: refuse them all.
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("type", kind=type(data).__name__ if data is not None else "null")
        if not 1 <= data <= MAX_AMOUNT:
            self.fail("range")
        return data

    def to_representation(self, value: int) -> int:
        return value


@extend_schema_field({"type": "string", "enum": sorted(CURRENCIES), "example": "usd"})
class CurrencyField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 3)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("Currency must be a string such as \"usd\".")
        value = super().to_internal_value(data)
        if value not in CURRENCIES:
            raise serializers.ValidationError(
                f"Unsupported currency {value!r}; use a lower-case ISO 4217 code such as \"usd\"."
            )
        return value


# Metadata keys: 1–40 characters, none of them a control character (C0, DEL, C1); values: up to
# 500 characters without line breaks or NUL. The validator and the schema read these patterns.
METADATA_KEY = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,40}$"
METADATA_VALUE = "^[^\\r\\n\\x00]{0,500}$"


@extend_schema_field({"type": "object", "maxProperties": 20,
                      "propertyNames": {"pattern": METADATA_KEY},
                      "additionalProperties": {"type": "string", "pattern": METADATA_VALUE},
                      "description": "Up to 20 keys (1–40 characters, no control characters) "
                                     "of strings up to 500 characters (no line breaks)."})
class MetadataField(serializers.DictField):
    """Up to 20 keys (≤ 40 chars) of short string values (≤ 500 chars), Stripe's limits."""

    MAX_KEYS, MAX_KEY, MAX_VALUE = 20, 40, 500

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("child", serializers.CharField(allow_blank=True, max_length=500))
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Metadata must be an object of string values.")
        if len(data) > self.MAX_KEYS:
            raise serializers.ValidationError(f"Metadata may have at most {self.MAX_KEYS} keys.")
        for key, value in data.items():
            if not re.fullmatch(METADATA_KEY, key):
                raise serializers.ValidationError(
                    f"Metadata keys must be 1–{self.MAX_KEY} characters, none of them a "
                    "control character."
                )
            if not isinstance(value, str):
                raise serializers.ValidationError(f"Metadata value for {key!r} must be a string.")
            if not re.fullmatch(METADATA_VALUE, value) and len(value) <= self.MAX_VALUE:
                raise serializers.ValidationError(
                    f"Metadata value for {key!r} may not contain line breaks or NUL."
                )
            if contains_card_number(value):
                raise serializers.ValidationError("Card numbers are not allowed in metadata.")
        return super().to_internal_value(data)


class LastErrorOutput(serializers.Serializer):
    code = serializers.CharField(help_text="A decline or error code (see the error codes)")
    message = serializers.CharField(allow_null=True)


class ProviderObjectOutput(SharedFields):
    """Documentation, for the OpenAPI schema, of what payments, deposits and payouts share (their
    bodies come from core.payloads.provider_object_to_dict). A subclass redeclares `id` (its
    prefix), `object` and `status` (its choices)."""

    own_fields_after = "status"

    id = serializers.CharField()
    object = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.CharField()
    description = serializers.CharField()
    metadata = serializers.DictField(child=serializers.CharField())
    provider = serializers.CharField(allow_null=True)
    # The schema documents every version: `last_error` since 2026-12-06, the two fields it
    # replaced before (core.versions renders one or the other).
    last_error = LastErrorOutput(allow_null=True, required=False, help_text=(
        "Why it failed, or null (API versions from 2026-12-06 on)."))
    failure_code = serializers.CharField(allow_null=True, required=False, help_text=(
        "API versions before 2026-12-06 only: `last_error.code`."))
    failure_message = serializers.CharField(allow_null=True, required=False, help_text=(
        "API versions before 2026-12-06 only: `last_error.message`."))
    livemode = serializers.BooleanField()
    created = serializers.IntegerField()
