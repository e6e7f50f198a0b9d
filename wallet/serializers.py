"""API input validation for deposits and payouts, and their output shapes for the OpenAPI
schema (the bodies themselves come from wallet.payloads)."""

from __future__ import annotations

from rest_framework import serializers

from core.serializers import (
    AmountField,
    CurrencyField,
    MetadataField,
    ProviderObjectOutput,
    SharedFields,
    StrictSerializer,
)
from wallet.models import DepositStatus, PayoutStatus

DESTINATION_HELP = ("A bank-account token such as ba_checking; account numbers are never "
                    "accepted.")
METHOD_HELP = "A deposit method token such as pix, boleto or bank_transfer."


# What creating a deposit or a payout takes; each adds where the money comes from or goes. (A
# comment, not a docstring: the schema describes both inputs with StrictSerializer's.)
class _MoneyMovementInput(StrictSerializer, SharedFields):
    own_fields_after = "currency"

    amount = AmountField()
    currency = CurrencyField()
    description = serializers.CharField(max_length=500, required=False, default="",
                                        allow_blank=True)
    metadata = MetadataField()


class DepositCreateInput(_MoneyMovementInput):
    method = serializers.RegexField(r"^[a-z][a-z0-9_]{1,63}$", help_text=METHOD_HELP)


class PayoutCreateInput(_MoneyMovementInput):
    destination = serializers.RegexField(r"^ba_[A-Za-z0-9_]{1,61}$", help_text=DESTINATION_HELP)


class DepositListFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=DepositStatus.choices, required=False)


class PayoutListFilters(serializers.Serializer):
    status = serializers.ChoiceField(choices=PayoutStatus.choices, required=False)


class DepositOutput(ProviderObjectOutput):
    """Documentation of the deposit object for the OpenAPI schema."""

    id = serializers.CharField(help_text="dep_…")
    object = serializers.CharField(default="deposit")
    status = serializers.ChoiceField(choices=DepositStatus.choices)
    method = serializers.CharField()


class PayoutOutput(ProviderObjectOutput):
    """Documentation of the payout object for the OpenAPI schema."""

    id = serializers.CharField(help_text="po_…")
    object = serializers.CharField(default="payout")
    status = serializers.ChoiceField(choices=PayoutStatus.choices)
    destination = serializers.CharField()
