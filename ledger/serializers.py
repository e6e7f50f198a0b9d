"""API output for balances and balance transactions (postings), and list filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
    payout = serializers.RegexField(r"^po_[A-Za-z0-9]{1,60}$", required=False, error_messages={
        "invalid": "Give a payout id (po_…)."}, help_text=(
            "po_…: the transactions this payout paid out (every movement of available since "
            "the previous payout, and the payout itself)"))


# Unix seconds, as `created` in every object: from 2000-01-01 to 9999 (a typo, not a time).
_MIN_TIMESTAMP, _MAX_TIMESTAMP = 946_684_800, 253_402_300_799


class TimestampField(serializers.IntegerField):
    """Unix seconds (UTC) → an aware datetime."""

    def __init__(self, *, min_value: int = _MIN_TIMESTAMP, max_value: int = _MAX_TIMESTAMP,
                 **kwargs: Any) -> None:
        super().__init__(min_value=min_value, max_value=max_value, **kwargs)

    def run_validation(self, data: Any = serializers.empty) -> Any:
        seconds = super().run_validation(data)  # an int within the bounds, or the default
        return seconds if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


class BalanceFilters(serializers.Serializer):
    as_of = TimestampField(required=False, help_text="Unix seconds: the balance as it stood "
                                                     "then (after every transaction up to it)")


class PeriodReportFilters(serializers.Serializer):
    currency = CurrencyField()
    # A period lasts at least a second: the bounds say so, the rest (end after start, at most
    # 366 days) is checked below and stated in the operation's description.
    start = TimestampField(max_value=_MAX_TIMESTAMP - 1, help_text="Unix seconds, inclusive")
    end = TimestampField(min_value=_MIN_TIMESTAMP + 1,
                         help_text="Unix seconds, exclusive: after `start`, at most 366 days "
                                   "later")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError({"end": "end must be after start."})
        if attrs["end"] - attrs["start"] > timedelta(days=366):
            raise serializers.ValidationError({"end": "A report covers at most 366 days; "
                                                      "ask for one period at a time."})
        return attrs


class BalanceByType(serializers.Serializer):
    pending = serializers.IntegerField()
    available = serializers.IntegerField()
    reserved = serializers.IntegerField()
    disputed = serializers.IntegerField()
    total = serializers.IntegerField()


class PeriodReportOutput(serializers.Serializer):
    object = serializers.CharField(default="balance_report")
    currency = serializers.CharField()
    start = serializers.IntegerField()
    end = serializers.IntegerField()
    opening = BalanceByType()
    movements = serializers.DictField(child=BalanceByType(), help_text=(
        "Per category (captures, settlements, refunds, disputes, deposits, payouts, "
        "adjustments): the net change of each balance type in the period"))
    fees = serializers.IntegerField(help_text="Kept by the platform from settlements")
    closing = BalanceByType()
    entries = serializers.IntegerField(help_text="Journal entries in the period")


def _by_type(amounts: dict[str, int]) -> dict[str, int]:
    row = {kind: amounts.get(kind, 0) for kind in sorted(MERCHANT_KINDS)}
    return {**row, "total": sum(row.values())}


def report_to_dict(report: Any) -> dict[str, Any]:
    return {
        "object": "balance_report", "currency": report.currency,
        "start": int(report.start.timestamp()), "end": int(report.end.timestamp()),
        "opening": _by_type(report.opening),
        "movements": {name: _by_type(row) for name, row in sorted(report.movements.items())},
        "fees": report.fees, "closing": _by_type(report.closing), "entries": report.entries,
    }


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
