"""API output for balances and balance transactions (postings), and list filters."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.serializers import CurrencyField
from ledger.models import MERCHANT_KINDS, EntryKind, Posting


class AmountInCurrency(serializers.Serializer):
    amount = serializers.IntegerField(help_text="Minor units; may be negative for `available`.")
    currency = serializers.CharField()


class BalanceOutput(serializers.Serializer):
    object = serializers.CharField(default="balance")
    available = AmountInCurrency(many=True)
    pending = AmountInCurrency(many=True)
    reserved = AmountInCurrency(many=True)
    disputed = AmountInCurrency(many=True)
    livemode = serializers.BooleanField()


class SourceOutput(serializers.Serializer):
    object = serializers.CharField(help_text="payment, refund, dispute, payout, deposit, …")
    id = serializers.CharField(help_text="pay_…, re_…, dp_…, po_…, dep_…")


class BalanceTransactionOutput(serializers.Serializer):
    id = serializers.CharField(help_text="bt_…: one posting on one of your balances")
    object = serializers.CharField(default="balance_transaction")
    amount = serializers.IntegerField(help_text="Signed, minor units")
    currency = serializers.CharField()
    type = serializers.ChoiceField(choices=EntryKind.choices)
    balance_type = serializers.ChoiceField(choices=sorted(MERCHANT_KINDS))
    balance_after = serializers.IntegerField()
    entry = serializers.CharField(help_text="txn_…: the journal entry this posting belongs to")
    source = SourceOutput()
    description = serializers.CharField()
    created = serializers.IntegerField()


class BalanceTransactionFilters(serializers.Serializer):
    currency = CurrencyField(required=False)
    type = serializers.ChoiceField(choices=EntryKind.choices, required=False)
    balance_type = serializers.ChoiceField(choices=sorted(MERCHANT_KINDS), required=False)


def posting_to_dict(posting: Posting) -> dict[str, Any]:
    entry = posting.entry
    return {
        "id": posting.id,
        "object": "balance_transaction",
        "amount": posting.amount,
        "currency": posting.currency,
        "type": entry.kind,
        "balance_type": posting.account.kind,
        "balance_after": posting.balance_after,
        "entry": entry.id,
        "source": {"object": entry.reference_type, "id": entry.reference_id},
        "description": entry.description,
        "created": int(posting.created_at.timestamp()),
    }
