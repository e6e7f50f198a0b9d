"""Ledger tables: accounts with maintained balances and chain heads, journal entries, postings,
and signed checkpoints of the chain heads.

Rows are written only by `ledger.services` (`entry_post`, `entries_post`); PostgreSQL triggers
(migrations 0002, 0003) keep postings immutable, entries balanced, account balances equal to
the sum of postings and each posting linked to the previous posting of its account.
"""

from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce

from core.ids import PublicIdField
from core.models import Merchant
from ledger.chain import GENESIS_HASH, account_label


class AccountKind(models.TextChoices):
    # Merchant accounts: what the platform owes the merchant, by availability.
    PENDING = "pending"
    AVAILABLE = "available"
    RESERVED = "reserved"
    DISPUTED = "disputed"
    # Platform accounts: the other side of every merchant movement.
    PROVIDER_CLEARING = "provider_clearing"
    FEES = "fees"
    PAYOUTS_IN_TRANSIT = "payouts_in_transit"
    DEPOSITS_CLEARING = "deposits_clearing"


# Plain strings, so migrations serialise them as literals rather than enum references.
MERCHANT_KINDS = frozenset(k.value for k in (
    AccountKind.PENDING, AccountKind.AVAILABLE, AccountKind.RESERVED, AccountKind.DISPUTED,
))
PLATFORM_KINDS = frozenset(AccountKind.values) - MERCHANT_KINDS
# Accounts that must not be overdrawn. `reserved` never (a CHECK constraint); `available` only
# by the entry kinds in ENTRY_KINDS_MAY_OVERDRAW_AVAILABLE (refund and dispute, like Stripe).
NO_OVERDRAFT_KINDS = frozenset({AccountKind.AVAILABLE.value, AccountKind.RESERVED.value})


class EntryKind(models.TextChoices):
    CAPTURE = "capture"
    SETTLEMENT = "settlement"
    REFUND_CREATED = "refund_created"
    REFUND_SUCCEEDED = "refund_succeeded"
    REFUND_FAILED = "refund_failed"
    DISPUTE_OPENED = "dispute_opened"
    DISPUTE_WON = "dispute_won"
    DISPUTE_LOST = "dispute_lost"
    DEPOSIT_CONFIRMED = "deposit_confirmed"
    PAYOUT_CREATED = "payout_created"
    PAYOUT_IN_TRANSIT = "payout_in_transit"
    PAYOUT_PAID = "payout_paid"
    PAYOUT_FAILED = "payout_failed"
    ADJUSTMENT = "adjustment"
    REVERSAL = "reversal"


# The only entries that may take an `available` balance below zero. Mirrored by the posting
# trigger in migration 0002 (a change here needs a migration that replaces that function).
ENTRY_KINDS_MAY_OVERDRAW_AVAILABLE = frozenset(k.value for k in (
    EntryKind.REFUND_CREATED, EntryKind.DISPUTE_OPENED, EntryKind.REVERSAL,
))


class Account(models.Model):
    """One balance: a merchant's (`merchant` set) or the platform's (`merchant` null).

    `provider_clearing` accounts carry the provider code in `provider` (shown as
    `provider_clearing:<provider>`); every other kind has `provider=""`. `balance` is maintained
    by the posting trigger under the row lock, `version` counts the postings applied and
    `head_hash` is the hash of the newest one (the head of this account's chain).

    A platform account that every payment touches is split into `shard`s (summed on read), so
    captures of different merchants do not queue on one row; merchant accounts have shard 0.
    """

    id = models.BigAutoField(primary_key=True)  # integer: locks are taken in sorted id order
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+",
                                 null=True, blank=True)
    currency = models.CharField(max_length=3)
    kind = models.CharField(max_length=32, choices=AccountKind.choices)
    provider = models.CharField(max_length=32, blank=True, default="")
    shard = models.PositiveSmallIntegerField(default=0)
    balance = models.BigIntegerField(default=0, editable=False)
    version = models.BigIntegerField(default=0, editable=False)
    head_hash = models.CharField(max_length=64, default=GENESIS_HASH, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # NULLS NOT DISTINCT: one platform account per (currency, kind, provider) too.
            models.UniqueConstraint(fields=["merchant", "currency", "kind", "provider", "shard"],
                                    nulls_distinct=False, name="ledger_account_unique"),
            models.CheckConstraint(condition=Q(merchant__isnull=True) | Q(shard=0),
                                   name="ledger_account_shard_platform_only"),
            models.CheckConstraint(condition=Q(kind__in=AccountKind.values),
                                   name="ledger_account_kind_known"),
            models.CheckConstraint(condition=Q(currency__regex=r"^[a-z]{3}$"),
                                   name="ledger_account_currency_format"),
            models.CheckConstraint(
                condition=(Q(kind__in=sorted(MERCHANT_KINDS), merchant__isnull=False)
                           | Q(kind__in=sorted(PLATFORM_KINDS),
                                merchant__isnull=True)),
                name="ledger_account_owner_matches_kind"),
            models.CheckConstraint(
                condition=(Q(kind=AccountKind.PROVIDER_CLEARING) & ~Q(provider=""))
                | (~Q(kind=AccountKind.PROVIDER_CLEARING) & Q(provider="")),
                name="ledger_account_provider_only_for_clearing"),
            models.CheckConstraint(condition=~Q(kind=AccountKind.RESERVED) | Q(balance__gte=0),
                                   name="ledger_account_reserved_nonnegative"),
        ]
        indexes = [
            # How entry_post finds an account by its key (ledger.services.AccountKey).
            models.Index(Coalesce(F("merchant"), Value(""), output_field=models.CharField()),
                         "currency", "kind", "provider", "shard", name="ledger_account_key"),
        ]

    def __str__(self) -> str:
        owner = self.merchant_id or "platform"
        return f"{owner} {self.code} {self.currency}"

    @property
    def code(self) -> str:
        """The contract's name: `available`, `provider_clearing:sandbox`, …"""
        return f"{self.kind}:{self.provider}" if self.provider else self.kind

    @property
    def label(self) -> str:
        """The code with the shard for split platform accounts: `provider_clearing:sandbox#3`."""
        return account_label(self.kind, self.provider, self.shard)


class JournalEntry(models.Model):
    """A balanced set of postings. `hash` is its digest (`ledger.chain.entry_digest`), which every
    posting's chain link names; `sequence` orders entries by when they were posted (a database
    sequence, no lock: entries on disjoint accounts commit in parallel, so it is not commit
    order and may have gaps)."""

    id = PublicIdField(prefix="txn")
    sequence = models.BigIntegerField(unique=True, editable=False)
    kind = models.CharField(max_length=32, choices=EntryKind.choices)
    description = models.CharField(max_length=500, blank=True, default="")
    reference_type = models.CharField(max_length=32)  # "payment", "refund", "payout", …
    reference_id = models.CharField(max_length=64)  # "pay_…"
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+",
                                 null=True, blank=True)
    created_at = models.DateTimeField()
    hash = models.CharField(max_length=64)

    class Meta:
        verbose_name_plural = "journal entries"
        constraints = [
            # One entry per business event, so a replayed webhook or task cannot post twice.
            models.UniqueConstraint(fields=["reference_type", "reference_id", "kind"],
                                    name="ledger_entry_once_per_reference"),
            models.CheckConstraint(condition=Q(kind__in=EntryKind.values),
                                   name="ledger_entry_kind_known"),
            models.CheckConstraint(condition=Q(sequence__gte=1), name="ledger_entry_sequence"),
        ]
        indexes = [
            models.Index(fields=["merchant", "-created_at"], name="ledger_entry_merchant"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.kind} {self.reference_type} {self.reference_id}"


class Posting(models.Model):
    """One signed movement on one account; `balance_after` is the account balance after it.

    Chained per account: `account_version` is the account's version after it (1, 2, 3, …),
    `prev_hash` the hash of the account's posting before it and `hash` its own
    (`ledger.chain.posting_hash`). The posting trigger refuses any other link."""

    id = PublicIdField(prefix="bt")  # a "balance transaction" in the API
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings",
                              db_index=False)  # the (entry, account) unique index covers it
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings")
    # Copied from the account (the trigger checks it) so a merchant's list is one index scan.
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+",
                                 null=True, blank=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    balance_after = models.BigIntegerField()
    created_at = models.DateTimeField()
    account_version = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entry", "account"],
                                    name="ledger_posting_one_per_account"),
            models.UniqueConstraint(fields=["account", "account_version"],
                                    name="ledger_posting_account_chain"),
            models.CheckConstraint(condition=Q(account_version__gte=1),
                                   name="ledger_posting_account_version"),
            models.CheckConstraint(condition=Q(hash__regex=r"^[0-9a-f]{64}$"),
                                   name="ledger_posting_hash_format"),
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_posting_nonzero"),
        ]
        indexes = [
            models.Index(fields=["merchant", "-created_at", "-id"],
                         name="ledger_posting_merchant"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.amount:+d} {self.currency}"


class Checkpoint(models.Model):
    """A signed statement of every account's chain head (`ledger.chain` has the format).

    The database copy serves `GET /api/v1/ledger/checkpoint`; the copy that counts is exported
    where the database owner cannot rewrite it (LEDGER_CHECKPOINT_DIR, the logs). Verification
    needs the public key, never the private one, which lives only in the environment.
    """

    number = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField()
    body = models.JSONField()
    signature = models.CharField(max_length=200)
    # [[account_id, merchant_id, currency, code, version, head_hash, balance], …]
    heads = models.JSONField()

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(number__gte=1),
                                              name="ledger_checkpoint_number")]

    def __str__(self) -> str:
        return f"checkpoint {self.number} ({self.body.get('root', '')[:12]}…)"
