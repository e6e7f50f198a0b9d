"""Deposits (`dep_…`), payouts (`po_…`) and the provider attempts behind them.

Status fields are django-fsm-2 fields with `protected=True`: only the transitions below change
them, and only `wallet.services` calls those. PostgreSQL enforces the same tables with triggers
(migration 0002), and checks at COMMIT that every status has its ledger entry.

Payouts: `pending → in_transit → paid | failed`, and `pending → failed` when the provider
refuses one outright. `in_transit` means the provider accepted it; a payout the provider reports
paid before we saw it accepted passes through `in_transit` in the same transaction. Deposits:
`pending → succeeded | failed`; funds reach `available` only on `succeeded`.
"""

from django.db import models
from django.db.models import Q
from django_fsm import FSMField, FSMModelMixin, transition

from core.ids import PublicIdField
from core.models import (
    OPEN_ATTEMPT_STATUSES,
    Merchant,
    ProviderAttempt,
    money_object_constraints,
    money_object_indexes,
)


class DepositStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PayoutStatus(models.TextChoices):
    PENDING = "pending"
    IN_TRANSIT = "in_transit"
    PAID = "paid"
    FAILED = "failed"



# The tables the FSM below and the PostgreSQL triggers in migration 0002 both enforce.
DEPOSIT_TRANSITIONS: list[tuple[str, str]] = [
    (DepositStatus.PENDING, DepositStatus.SUCCEEDED),
    (DepositStatus.PENDING, DepositStatus.FAILED),
]
PAYOUT_TRANSITIONS: list[tuple[str, str]] = [
    (PayoutStatus.PENDING, PayoutStatus.IN_TRANSIT),
    (PayoutStatus.PENDING, PayoutStatus.FAILED),
    (PayoutStatus.IN_TRANSIT, PayoutStatus.PAID),
    (PayoutStatus.IN_TRANSIT, PayoutStatus.FAILED),
]


class Movement(FSMModelMixin, models.Model):
    """What deposits and payouts share: money moved for a merchant through a provider. The
    constraint and index names take the concrete model's name (`deposit_…`, `payout_…`)."""

    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    description = models.CharField(max_length=500, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    provider = models.CharField(max_length=32)
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_message = models.CharField(max_length=500, blank=True, default="")
    idempotency_key = models.CharField(max_length=255, blank=True, default="", editable=False)
    # The request's fingerprint: a key reused with other parameters is 422 at any age.
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="",
                                               db_default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        indexes = money_object_indexes("%(class)s")

    def __str__(self) -> str:
        return self.id


class Deposit(Movement):
    id = PublicIdField(prefix="dep")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="deposits")
    method = models.CharField(max_length=64)
    status = FSMField(max_length=16, choices=DepositStatus.choices, default=DepositStatus.PENDING,
                      protected=True)

    class Meta(Movement.Meta):
        constraints = money_object_constraints("deposit", DepositStatus.values,
                                               sent_to_provider=True)

    @property
    def is_final(self) -> bool:
        return self.status != DepositStatus.PENDING

    @transition(field=status, source=DepositStatus.PENDING, target=DepositStatus.SUCCEEDED)
    def mark_succeeded(self) -> None:
        pass

    @transition(field=status, source=DepositStatus.PENDING, target=DepositStatus.FAILED)
    def mark_failed(self, code: str, message: str) -> None:
        self.failure_code, self.failure_message = code[:64], message[:500]


class Payout(Movement):
    id = PublicIdField(prefix="po")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="payouts")
    destination = models.CharField(max_length=64, help_text="A bank-account token (ba_…).")
    status = FSMField(max_length=16, choices=PayoutStatus.choices, default=PayoutStatus.PENDING,
                      protected=True)

    class Meta(Movement.Meta):
        constraints = money_object_constraints("payout", PayoutStatus.values,
                                               sent_to_provider=True)

    @property
    def is_final(self) -> bool:
        return self.status in (PayoutStatus.PAID, PayoutStatus.FAILED)

    @transition(field=status, source=PayoutStatus.PENDING, target=PayoutStatus.IN_TRANSIT)
    def mark_in_transit(self) -> None:
        pass

    @transition(field=status, source=PayoutStatus.IN_TRANSIT, target=PayoutStatus.PAID)
    def mark_paid(self) -> None:
        pass

    @transition(field=status, source=[PayoutStatus.PENDING, PayoutStatus.IN_TRANSIT],
                target=PayoutStatus.FAILED)
    def mark_failed(self, code: str, message: str) -> None:
        self.failure_code, self.failure_message = code[:64], message[:500]


class MovementKind(models.TextChoices):
    DEPOSIT = "deposit"
    PAYOUT = "payout"


class AttemptStatus(models.TextChoices):
    REQUESTED = "requested"  # committed before the call; the call may or may not have happened
    ACCEPTED = "accepted"  # the provider took it (pending, paid or confirmed)
    DECLINED = "declined"
    UNKNOWN = "unknown"  # sent, answer lost: only the same key again or a lookup resolves it


class MovementAttempt(ProviderAttempt):
    """One create call to a provider for a deposit or a payout (core.models.ProviderAttempt)."""

    id = PublicIdField(prefix="mvat")
    kind = models.CharField(max_length=16, choices=MovementKind.choices)
    deposit = models.ForeignKey(Deposit, on_delete=models.PROTECT, related_name="attempts",
                                null=True, blank=True)
    payout = models.ForeignKey(Payout, on_delete=models.PROTECT, related_name="attempts",
                               null=True, blank=True)
    status = models.CharField(max_length=16, choices=AttemptStatus.choices,
                              default=AttemptStatus.REQUESTED)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=AttemptStatus.values),
                                   name="movement_attempt_status_known"),
            models.CheckConstraint(
                condition=(Q(kind=MovementKind.DEPOSIT, deposit__isnull=False, payout__isnull=True)
                           | Q(kind=MovementKind.PAYOUT, payout__isnull=False,
                               deposit__isnull=True)),
                name="movement_attempt_one_owner"),
            # Failover opens the next attempt only after the last one was declined, so a
            # movement can never be in flight at two providers.
            models.UniqueConstraint(fields=["deposit"],
                                    condition=Q(status__in=OPEN_ATTEMPT_STATUSES),
                                    name="movement_attempt_one_open_per_deposit"),
            models.UniqueConstraint(fields=["payout"],
                                    condition=Q(status__in=OPEN_ATTEMPT_STATUSES),
                                    name="movement_attempt_one_open_per_payout"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="movement_attempt_age")]
