"""API output for balances and balance transactions (postings), and list filters."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.serializers import CurrencyField
from ledger.chain import micros
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


class ChainOutput(serializers.Serializer):
    account = serializers.IntegerField(help_text="The ledger account (one per balance type and "
                                                 "currency) whose hash chain this is in")
    version = serializers.IntegerField(help_text="Position in that account's chain: 1, 2, 3…")
    prev_hash = serializers.CharField(help_text="Hash of the account's previous transaction")
    hash = serializers.CharField(help_text="This transaction's hash (ledger/chain.py)")
    entry_hash = serializers.CharField(help_text="Digest of the journal entry")
    created_at_us = serializers.IntegerField(help_text="Creation time, microseconds since the "
                                                       "epoch (hashed)")


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
    chain = ChainOutput(help_text="Tamper evidence: check it against a signed checkpoint "
                                  "(GET /v1/ledger/checkpoint) offline with ledger/chain.py")


class CheckpointAccountOutput(serializers.Serializer):
    leaf = serializers.ListField(help_text="[account, merchant, currency, balance type, version, "
                                           "head hash, balance]")
    index = serializers.IntegerField()
    proof = serializers.ListField(child=serializers.CharField(),
                                  help_text="Sibling hashes, leaf side first (RFC 6962)")


class CheckpointOutput(serializers.Serializer):
    object = serializers.CharField(default="ledger_checkpoint")
    number = serializers.IntegerField()
    body = serializers.DictField(help_text="What was signed: format, number, created_at, "
                                           "previous, accounts, postings, root, key_id")
    signature = serializers.CharField(help_text="Ed25519 over the canonical JSON of `body`, "
                                                "base64")
    public_key = serializers.CharField(help_text="Ed25519 public key, hex")
    accounts = CheckpointAccountOutput(many=True, help_text="Your accounts' leaves and proofs")


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
        "chain": {"account": posting.account_id, "version": posting.account_version,
                  "prev_hash": posting.prev_hash, "hash": posting.hash,
                  "entry_hash": entry.hash, "created_at_us": micros(posting.created_at)},
    }
