"""API input validation and output representation for deposits and payouts."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.serializers import AmountField, CurrencyField, MetadataField, StrictSerializer
from wallet.models import Deposit, DepositStatus, Payout, PayoutStatus

DESTINATION_HELP = ("A bank-account token such as ba_checking; account numbers are never "
                    "accepted.")
METHOD_HELP = "A deposit method token such as pix, boleto or bank_transfer."


class DepositCreateInput(StrictSerializer):
    amount = AmountField()
    currency = CurrencyField()
    method = serializers.RegexField(r"^[a-z][a-z0-9_]{1,63}$", help_text=METHOD_HELP)
    description = serializers.CharField(max_length=500, required=False, default="",
                                        allow_blank=True)
    metadata = MetadataField()


class PayoutCreateInput(StrictSerializer):
    amount = AmountField()
    currency = CurrencyField()
    destination = serializers.RegexField(r"^ba_[A-Za-z0-9_]{1,61}$", help_text=DESTINATION_HELP)
    description = serializers.CharField(max_length=500, required=False, default="",
                                        allow_blank=True)
    metadata = MetadataField()


class DepositListFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=DepositStatus.choices, required=False)


class PayoutListFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=PayoutStatus.choices, required=False)


def deposit_to_dict(deposit: Deposit) -> dict[str, Any]:
    return {
        "id": deposit.id,
        "object": "deposit",
        "amount": deposit.amount,
        "currency": deposit.currency,
        "status": deposit.status,
        "method": deposit.method,
        "description": deposit.description,
        "metadata": deposit.metadata,
        "provider": deposit.provider or None,
        "failure_code": deposit.failure_code or None,
        "failure_message": deposit.failure_message or None,
        "livemode": deposit.merchant.is_live,
        "created": int(deposit.created_at.timestamp()),
    }


def payout_to_dict(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "object": "payout",
        "amount": payout.amount,
        "currency": payout.currency,
        "status": payout.status,
        "destination": payout.destination,
        "description": payout.description,
        "metadata": payout.metadata,
        "provider": payout.provider or None,
        "failure_code": payout.failure_code or None,
        "failure_message": payout.failure_message or None,
        "livemode": payout.merchant.is_live,
        "created": int(payout.created_at.timestamp()),
    }


class DepositOutput(serializers.Serializer):
    """Documentation of the deposit object for the OpenAPI schema."""

    id = serializers.CharField(help_text="dep_…")
    object = serializers.CharField(default="deposit")
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=DepositStatus.choices)
    method = serializers.CharField()
    description = serializers.CharField()
    metadata = serializers.DictField(child=serializers.CharField())
    provider = serializers.CharField(allow_null=True)
    failure_code = serializers.CharField(allow_null=True)
    failure_message = serializers.CharField(allow_null=True)
    livemode = serializers.BooleanField()
    created = serializers.IntegerField()


class PayoutOutput(serializers.Serializer):
    """Documentation of the payout object for the OpenAPI schema."""

    id = serializers.CharField(help_text="po_…")
    object = serializers.CharField(default="payout")
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=PayoutStatus.choices)
    destination = serializers.CharField()
    description = serializers.CharField()
    metadata = serializers.DictField(child=serializers.CharField())
    provider = serializers.CharField(allow_null=True)
    failure_code = serializers.CharField(allow_null=True)
    failure_message = serializers.CharField(allow_null=True)
    livemode = serializers.BooleanField()
    created = serializers.IntegerField()
