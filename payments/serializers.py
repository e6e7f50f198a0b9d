"""API input validation and output representation for payments and refunds."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.serializers import AmountField, CurrencyField, MetadataField, StrictSerializer
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


def payment_to_dict(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "object": "payment",
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "capture_method": payment.capture_method,
        "payment_method": payment.payment_method,
        "amount_authorized": payment.amount_authorized,
        "amount_captured": payment.amount_captured,
        "amount_refunded": payment.amount_refunded,
        "amount_disputed": payment.amount_disputed,
        "description": payment.description,
        "metadata": payment.metadata,
        "provider": payment.provider or None,
        "failure_code": payment.failure_code or None,
        "failure_message": payment.failure_message or None,
        "livemode": payment.merchant.is_live,
        "created": int(payment.created_at.timestamp()),
    }


def refund_to_dict(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "object": "refund",
        "payment": refund.payment_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "reason": refund.reason or None,
        "metadata": refund.metadata,
        "failure_code": refund.failure_code or None,
        "failure_message": refund.failure_message or None,
        "created": int(refund.created_at.timestamp()),
    }


class PaymentOutput(serializers.Serializer):
    """Documentation of the payment object for the OpenAPI schema."""

    id = serializers.CharField(help_text="pay_…")
    object = serializers.CharField(default="payment")
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=Payment._meta.get_field("status").choices)
    capture_method = serializers.ChoiceField(choices=CaptureMethod.choices)
    payment_method = serializers.CharField()
    amount_authorized = serializers.IntegerField()
    amount_captured = serializers.IntegerField()
    amount_refunded = serializers.IntegerField()
    amount_disputed = serializers.IntegerField()
    description = serializers.CharField()
    metadata = serializers.DictField(child=serializers.CharField())
    provider = serializers.CharField(allow_null=True)
    failure_code = serializers.CharField(allow_null=True)
    failure_message = serializers.CharField(allow_null=True)
    livemode = serializers.BooleanField()
    created = serializers.IntegerField()


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


def dispute_to_dict(dispute: Dispute) -> dict[str, Any]:
    return {
        "id": dispute.id,
        "object": "dispute",
        "payment": dispute.payment_id,
        "amount": dispute.amount,
        "currency": dispute.currency,
        "reason": dispute.reason,
        "status": dispute.status,
        "evidence": dispute.evidence,
        "evidence_submitted": (int(dispute.evidence_submitted_at.timestamp())
                               if dispute.evidence_submitted_at else None),
        "due_by": int(dispute.due_by.timestamp()),
        "created": int(dispute.created_at.timestamp()),
    }


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
