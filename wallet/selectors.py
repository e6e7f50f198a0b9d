"""Reads for deposits and payouts: one merchant's, and the ones the janitor should look up."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from core.models import Merchant
from core.selectors import narrowed, one_or_404
from wallet.models import Deposit, DepositStatus, Payout, PayoutStatus


def deposit_get(*, merchant: Merchant, deposit_id: str) -> Deposit:
    return one_or_404(deposit_list(merchant=merchant), deposit_id, noun="deposit")


def deposit_list(*, merchant: Merchant, status: str | None = None) -> QuerySet[Deposit]:
    return narrowed(Deposit.objects.select_related("merchant").filter(merchant=merchant),
                    status=status)


def payout_get(*, merchant: Merchant, payout_id: str) -> Payout:
    return one_or_404(payout_list(merchant=merchant), payout_id, noun="payout")


def payout_list(*, merchant: Merchant, status: str | None = None) -> QuerySet[Payout]:
    return narrowed(Payout.objects.select_related("merchant").filter(merchant=merchant),
                    status=status)


def payout_ids_to_refresh(*, unchanged_since: datetime, limit: int = 500) -> list[str]:
    """Payouts still open (pending or in transit) and untouched since `unchanged_since`, oldest
    first: for the reconciliation janitor to pass to `payout_refresh`."""
    return list(
        Payout.objects.filter(status__in=[PayoutStatus.PENDING, PayoutStatus.IN_TRANSIT],
                              updated_at__lt=unchanged_since)
        .order_by("updated_at").values_list("pk", flat=True)[:limit])


def deposit_ids_to_refresh(*, unchanged_since: datetime, limit: int = 500) -> list[str]:
    """Pending deposits untouched since `unchanged_since`, oldest first (`deposit_refresh`)."""
    return list(
        Deposit.objects.filter(status=DepositStatus.PENDING, updated_at__lt=unchanged_since)
        .order_by("updated_at").values_list("pk", flat=True)[:limit])


# A payout has left the merchant's bank account once the provider has it: from then on the
# bank statement must show its debit.
PAYOUT_DEBITED = (PayoutStatus.IN_TRANSIT.value, PayoutStatus.PAID.value)
PAYOUT_ROW_FIELDS = ("id", "merchant_id", "status", "amount", "currency", "provider",
                     "provider_reference", "created_at", "completed_at")


def payout_rows(*conditions: Any, livemode: bool, **lookups: Any) -> list[dict[str, Any]]:
    """Payouts of live or test merchants matching the caller's conditions, as plain rows,
    oldest first (bank reconciliation matches statement debits against them)."""
    return list(Payout.objects.filter(*conditions, **lookups, merchant__is_live=livemode)
                .order_by("created_at", "id").values(*PAYOUT_ROW_FIELDS))
