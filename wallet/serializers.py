"""API input validation for deposits and payouts, and their output shapes for the OpenAPI
schema (the bodies themselves come from wallet.payloads)."""

from __future__ import annotations

from rest_framework import serializers

from core.serializers import AmountField, CurrencyField, MetadataField, StrictSerializer
from wallet.models import DepositStatus, PayoutStatus

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
