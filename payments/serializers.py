"""API input validation for payments, refunds and disputes, and their output shapes for the
OpenAPI schema (the bodies themselves come from payments.payloads)."""

from __future__ import annotations

from rest_framework import serializers

from core.serializers import (
    AmountField,
    CurrencyField,
    MetadataField,
    ProviderObjectOutput,
    StrictSerializer,
)
from payments.models import CaptureMethod, Dispute, Payment, Refund, RefundReason

TOKEN_HELP = "A payment method token such as pm_card_visa; card numbers are never accepted."  # noqa: S105


class PaymentCreateInput(StrictSerializer):
    amount = AmountField()
    currency = CurrencyField()
    capture_method = serializers.ChoiceField(choices=CaptureMethod.choices, required=False,
                                             default=CaptureMethod.AUTOMATIC)
    payment_method = serializers.RegexField(r"^pm_[a-z0-9_]{1,60}$", help_text=TOKEN_HELP)
    description = serializers.CharField(max_length=500, required=False, default="",
                                        allow_blank=True)
    metadata = MetadataField()
    confirm = serializers.BooleanField(required=False, default=False)


class PaymentCaptureInput(StrictSerializer):
    amount = AmountField(required=False)


class PaymentCancelInput(StrictSerializer):
    cancellation_reason = serializers.CharField(max_length=200, required=False, default="")


class EmptyInput(StrictSerializer):
    pass


class RefundCreateInput(StrictSerializer):
    payment = serializers.RegexField(r"^pay_[A-Za-z0-9]{1,40}$")
    amount = AmountField(required=False)
    reason = serializers.ChoiceField(choices=RefundReason.choices, required=False, default="")
    metadata = MetadataField()


class PaymentListFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=Payment._meta.get_field("status").choices,
                                     required=False)
    created_gte = serializers.DateTimeField(required=False)
    created_lt = serializers.DateTimeField(required=False)


class PaymentOutput(ProviderObjectOutput):
    """Documentation of the payment object for the OpenAPI schema."""

    id = serializers.CharField(help_text="pay_…")
    object = serializers.CharField(default="payment")
    status = serializers.ChoiceField(choices=Payment._meta.get_field("status").choices)
    capture_method = serializers.ChoiceField(choices=CaptureMethod.choices)
    payment_method = serializers.CharField()
    amount_authorized = serializers.IntegerField()
    amount_captured = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    amount_disputed = serializers.IntegerField()


class RefundOutput(serializers.Serializer):
    id = serializers.CharField(help_text="re_…")
    object = serializers.CharField(default="refund")
    payment = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=Refund._meta.get_field("status").choices)
    reason = serializers.CharField(allow_null=True)
    metadata = serializers.DictField(child=serializers.CharField())
    failure_code = serializers.CharField(allow_null=True)
    failure_message = serializers.CharField(allow_null=True)
    created = serializers.IntegerField()


class DisputeEvidenceInput(StrictSerializer):
    """Evidence text and references to files already uploaded elsewhere (ids or URLs)."""

    evidence = serializers.DictField(
        child=serializers.CharField(max_length=5000, allow_blank=True),
        help_text="e.g. {\"customer_communication\": \"…\", \"shipping_tracking_number\": "
                  "\"…\", \"receipt_file\": \"file_…\"}",
    )

    def validate_evidence(self, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise serializers.ValidationError("Provide at least one piece of evidence.")
        if len(value) > 20:
            raise serializers.ValidationError("At most 20 evidence fields.")
        return value


class DisputeOutput(serializers.Serializer):
    id = serializers.CharField(help_text="dp_…")
    object = serializers.CharField(default="dispute")
    payment = serializers.CharField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    reason = serializers.CharField()
    status = serializers.ChoiceField(choices=Dispute._meta.get_field("status").choices)
    evidence = serializers.DictField(child=serializers.CharField())
    evidence_submitted = serializers.IntegerField(allow_null=True)
    due_by = serializers.IntegerField()
    created = serializers.IntegerField()
