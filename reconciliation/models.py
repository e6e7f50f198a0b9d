"""Reconciliation's own tables: job runs, janitor checks, settlement files and lines, breaks.

Payments, refunds and attempts are referred to by id (plain columns, not foreign keys): this app
reads them through selectors and changes them only through `payments.services`.
"""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q

from core.ids import PublicIdField


class JobRun(models.Model):
    """One run of a scheduled job (beat task or management command): what ran last night."""

    job = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True,
                                       help_text="Empty while running, or if the process died.")
    examined = models.PositiveIntegerField(default=0)
    fixed = models.PositiveIntegerField(default=0)
    broken = models.PositiveIntegerField(default=0, help_text="Breaks opened by this run.")
    error = models.TextField(blank=True, default="")
    host = models.CharField(max_length=255, blank=True, default="")
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        indexes = [models.Index(fields=["job", "-started_at"], name="jobrun_job_recent"),
                   models.Index(fields=["started_at"], name="jobrun_started")]

    def __str__(self) -> str:
        return f"{self.job} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class CheckObjectType(models.TextChoices):
    PAYMENT = "payment"
    REFUND = "refund"
    PAYOUT = "payout"
    DEPOSIT = "deposit"
    # A capture or void of an authorized payment; its object id is the attempt's id, so a
    # payment whose later operation is stuck again gets a check of its own.
    CAPTURE_OR_VOID = "capture_or_void", "Capture or void"


class ReconciliationCheck(models.Model):
    """The janitor's memory for one stuck object: how often it asked the provider, when it asks
    next, and who holds the claim (a lease, so two janitors never process it at once)."""

    object_type = models.CharField(max_length=16, choices=CheckObjectType.choices)
    object_id = models.CharField(max_length=40)
    attempt_id = models.CharField(max_length=40, blank=True, default="",
                                  help_text="The attempt without an answer (payments, refunds, "
                                            "captures and voids).")
    stuck_since = models.DateTimeField(help_text="When that attempt was created; the retry "
                                                 "schedule counts from here.")
    checks = models.PositiveIntegerField(default=0)
    next_check_at = models.DateTimeField()
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=64, blank=True, default="")
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    leased_until = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Set when the object has an answer, or when a break was opened for it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["object_type", "object_id"],
                                    name="recon_check_one_per_object"),
            models.CheckConstraint(condition=Q(object_type__in=CheckObjectType.values),
                                   name="recon_check_object_type_known"),
        ]
        indexes = [models.Index(fields=["next_check_at"], name="recon_check_due",
                                condition=Q(closed_at__isnull=True))]

    def __str__(self) -> str:
        return f"{self.object_type} {self.object_id} ({self.checks} checks)"


class SettlementFile(models.Model):
    """A provider's settlement file exactly as downloaded (its bytes are in SettlementFileChunk).
    The same bytes imported again for the same provider and day hit the unique constraint and
    change nothing."""

    id = PublicIdField(prefix="stf")
    provider = models.CharField(max_length=32)
    file_date = models.DateField()
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the raw bytes.")
    size_bytes = models.PositiveIntegerField(default=0)
    line_count = models.PositiveIntegerField(default=0)
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "file_date", "checksum"],
                                    name="settlement_file_unique"),
        ]
        indexes = [models.Index(fields=["provider", "-file_date"], name="settlement_file_recent")]

    def __str__(self) -> str:
        return f"{self.provider} {self.file_date} ({self.id})"


class SettlementFileChunk(models.Model):
    """The raw file in order, a megabyte at a time: stored and read back without ever holding
    the whole file in memory (one bytea value would need it whole, more than once)."""

    file = models.ForeignKey(SettlementFile, on_delete=models.PROTECT, related_name="chunks")
    number = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["file", "number"],
                                               name="settlement_chunk_unique")]

    def __str__(self) -> str:
        return f"{self.file_id} #{self.number}"


class LineType(models.TextChoices):
    CAPTURE = "capture"
    REFUND = "refund"


class MatchStatus(models.TextChoices):
    MATCHED = "matched"
    MISMATCHED = "mismatched"  # found, but amount / currency / status disagree
    MISSING_INTERNALLY = "missing_internally"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"


class SettlementLine(models.Model):
    """One parsed line, normalised across providers: amounts are positive minor units (refund
    lines are negative in the files; `type` says which way the money went)."""

    file = models.ForeignKey(SettlementFile, on_delete=models.PROTECT, related_name="lines")
    line_number = models.PositiveIntegerField(help_text="1 is the first line after the header.")
    provider = models.CharField(max_length=32)
    type = models.CharField(max_length=16, choices=LineType.choices, blank=True, default="")
    provider_reference = models.CharField(max_length=128, blank=True, default="",
                                          help_text="The charge's reference at the provider.")
    refund_reference = models.CharField(max_length=128, blank=True, default="")
    merchant_reference = models.CharField(max_length=128, blank=True, default="",
                                          help_text="Our payment id, as the order id.")
    transaction_date = models.DateField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, default="")
    gross = models.BigIntegerField(default=0)
    fee = models.BigIntegerField(default=0)
    net = models.BigIntegerField(default=0)
    raw = models.TextField()
    status = models.CharField(max_length=24, choices=MatchStatus.choices)
    payment_id = models.CharField(max_length=40, blank=True, default="")
    refund_id = models.CharField(max_length=40, blank=True, default="")
    settled_at = models.DateTimeField(
        null=True, blank=True, help_text="When a matched capture was settled (payment_settle).")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["file", "line_number"], name="settlement_line_unique"),
            models.CheckConstraint(condition=Q(status__in=MatchStatus.values),
                                   name="settlement_line_status_known"),
        ]
        indexes = [
            models.Index(fields=["provider", "type", "provider_reference"],
                         name="settlement_line_charge"),
            models.Index(fields=["provider", "type", "refund_reference"],
                         name="settlement_line_refund",
                         condition=~Q(refund_reference="")),
            models.Index(fields=["payment_id"], name="settlement_line_payment",
                         condition=~Q(payment_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.file_id}:{self.line_number} {self.type} {self.provider_reference}"


class BreakType(models.TextChoices):
    MISSING_INTERNALLY = "missing_internally"
    MISSING_AT_PROVIDER = "missing_at_provider"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    DUPLICATE_LINE = "duplicate_line"
    MALFORMED_LINE = "malformed_line"
    STUCK_UNRESOLVED = "stuck_unresolved"  # the janitor's last lookup still had no answer
    LEDGER_VERIFY_FAILED = "ledger_verify_failed"
    # Two provider facts that cannot both hold for our books (a chargeback on money already
    # refunded): both are recorded, the balance shows what happened, a person contests.
    PROVIDER_CONFLICT = "provider_conflict"
    # A provider reference or event that collides with one we already hold for another object.
    REFERENCE_COLLISION = "reference_collision"
    # The bank leg (reconciliation/bank.py): a bank statement against provider settlement
    # deposits and our payouts. docs/OPERATIONS.md ("Bank statements") says how to work each.
    BANK_UNMATCHED_CREDIT = "bank_unmatched_credit"
    BANK_UNMATCHED_DEBIT = "bank_unmatched_debit"
    BANK_DEPOSIT_MISSING = "bank_deposit_missing"
    BANK_PAYOUT_MISSING = "bank_payout_missing"
    BANK_AMOUNT_MISMATCH = "bank_amount_mismatch"
    BANK_CURRENCY_MISMATCH = "bank_currency_mismatch"
    BANK_STATUS_MISMATCH = "bank_status_mismatch"


class BreakStatus(models.TextChoices):
    OPEN = "open"
    RESOLVED = "resolved"
    IGNORED = "ignored"


class ReconciliationBreak(models.Model):
    """A disagreement for a human: both sides' data, and how it was settled. `key` names the
    object the break is about, so the same problem found twice is one break."""

    id = PublicIdField(prefix="brk")
    type = models.CharField(max_length=32, choices=BreakType.choices)
    key = models.CharField(max_length=200, help_text="What the break is about, unique per type.")
    status = models.CharField(max_length=16, choices=BreakStatus.choices,
                              default=BreakStatus.OPEN)
    provider = models.CharField(max_length=32, blank=True, default="")
    payment_id = models.CharField(max_length=40, blank=True, default="")
    refund_id = models.CharField(max_length=40, blank=True, default="")
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    refund_reference = models.CharField(max_length=128, blank=True, default="")
    currency = models.CharField(max_length=3, blank=True, default="")
    our_amount = models.BigIntegerField(null=True, blank=True)
    provider_amount = models.BigIntegerField(null=True, blank=True)
    our_data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    provider_data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    settlement_line = models.ForeignKey(SettlementLine, on_delete=models.PROTECT, null=True,
                                        blank=True, related_name="breaks")
    resolution_note = models.TextField(blank=True, default="")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                    null=True, blank=True, related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["type", "key"], name="recon_break_unique"),
            models.CheckConstraint(condition=Q(type__in=BreakType.values),
                                   name="recon_break_type_known"),
            models.CheckConstraint(condition=Q(status__in=BreakStatus.values),
                                   name="recon_break_status_known"),
            models.CheckConstraint(
                condition=Q(status="open") | (Q(resolved_at__isnull=False)
                                              & ~Q(resolution_note="")),
                name="recon_break_closed_has_note"),
        ]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="recon_break_queue"),
            models.Index(fields=["payment_id"], name="recon_break_payment",
                         condition=~Q(payment_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.key} ({self.status})"


class BreakAudit(models.Model):
    """Who closed a break, how and why. Append-only; the admin-wide audit log comes later."""

    reconciliation_break = models.ForeignKey(ReconciliationBreak, on_delete=models.PROTECT,
                            related_name="audits")
    action = models.CharField(max_length=16, choices=BreakStatus.choices)
    from_status = models.CharField(max_length=16)
    note = models.TextField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True,
                             blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["reconciliation_break", "created_at"],
                                name="recon_audit_break")]

    def __str__(self) -> str:
        return f"{self.reconciliation_break_id} → {self.action}"


# -- the bank leg ----------------------------------------------------------------------------
class BankStatementFormat(models.TextChoices):
    CAMT053 = "camt053", "ISO 20022 camt.053"
    CSV = "csv", "CSV"


class BankStatement(models.Model):
    """One bank statement exactly as imported (its bytes in `raw`): account, period and the
    balances its lines were proven to add up to. One row per account and statement id; the
    same bytes again change nothing, other bytes under the same id are refused."""

    id = PublicIdField(prefix="bst")
    account = models.CharField(max_length=64, help_text="IBAN or the bank's account id.")
    statement_id = models.CharField(max_length=128)
    format = models.CharField(max_length=16, choices=BankStatementFormat.choices)
    currency = models.CharField(max_length=3)
    opening_balance = models.BigIntegerField(help_text="Minor units; negative when overdrawn.")
    closing_balance = models.BigIntegerField()
    from_date = models.DateField(help_text="First day the statement covers.")
    to_date = models.DateField(help_text="Last day the statement covers.")
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the raw bytes.")
    size_bytes = models.PositiveIntegerField(default=0)
    line_count = models.PositiveIntegerField(default=0)
    raw = models.BinaryField()
    imported_by = models.CharField(max_length=150, blank=True, default="",
                                   help_text="Staff username, or empty for the command line.")
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "statement_id"],
                                    name="bank_statement_unique"),
            models.CheckConstraint(condition=Q(format__in=BankStatementFormat.values),
                                   name="bank_statement_format_known"),
            models.CheckConstraint(condition=Q(from_date__lte=models.F("to_date")),
                                   name="bank_statement_period"),
        ]
        indexes = [models.Index(fields=["currency", "to_date"], name="bank_statement_cover")]

    def __str__(self) -> str:
        return f"{self.account} {self.statement_id} ({self.id})"


class BankDirection(models.TextChoices):
    CREDIT = "credit"  # money in: a provider's settlement deposit
    DEBIT = "debit"  # money out: one of our payouts


class BankMatch(models.TextChoices):
    MATCHED = "matched"
    MISMATCHED = "mismatched"  # the other side found, but amount / currency / status disagree
    UNMATCHED = "unmatched"


class BankLine(models.Model):
    """One booked entry of a statement. A credit matches a provider's settlement deposit (one
    settlement file's net payout in one currency), a debit one of our payouts."""

    statement = models.ForeignKey(BankStatement, on_delete=models.PROTECT, related_name="lines")
    line_number = models.PositiveIntegerField()
    booking_date = models.DateField()
    value_date = models.DateField(null=True, blank=True)
    direction = models.CharField(max_length=8, choices=BankDirection.choices)
    amount = models.BigIntegerField(help_text="Positive minor units; `direction` gives the way.")
    currency = models.CharField(max_length=3)
    bank_reference = models.CharField(max_length=128, blank=True, default="")
    end_to_end_id = models.CharField(max_length=128, blank=True, default="")
    counterparty = models.CharField(max_length=200, blank=True, default="")
    remittance_info = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=16, choices=BankMatch.choices)
    settlement_file = models.ForeignKey(SettlementFile, on_delete=models.PROTECT, null=True,
                                        blank=True, related_name="bank_lines")
    payout_id = models.CharField(max_length=40, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["statement", "line_number"],
                                    name="bank_line_unique"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="bank_line_amount_positive"),
            models.CheckConstraint(condition=Q(direction__in=BankDirection.values),
                                   name="bank_line_direction_known"),
            models.CheckConstraint(condition=Q(status__in=BankMatch.values),
                                   name="bank_line_status_known"),
            # One bank line pays one deposit or one payout, even across overlapping statements.
            models.UniqueConstraint(fields=["settlement_file", "currency"],
                                    condition=Q(status="matched", settlement_file__isnull=False),
                                    name="bank_line_one_per_deposit"),
            models.UniqueConstraint(fields=["payout_id"],
                                    condition=Q(status="matched") & ~Q(payout_id=""),
                                    name="bank_line_one_per_payout"),
        ]
        indexes = [
            models.Index(fields=["payout_id"], name="bank_line_payout",
                         condition=~Q(payout_id="")),
            models.Index(fields=["status", "direction"], name="bank_line_open",
                         condition=~Q(status="matched")),
        ]

    def __str__(self) -> str:
        return f"{self.statement_id}:{self.line_number} {self.direction} {self.amount}"
