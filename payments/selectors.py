"""Reads for payments and refunds: the API's (scoped to one merchant) and the refund rules
every app reads (`refundable_amount`)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet, Sum

from core.errors import NotFound
from core.models import Merchant
from payments.models import Dispute, Payment, Refund, RefundStatus


def payment_get(*, merchant: Merchant, payment_id: str) -> Payment:
    payment = (
        Payment.objects.select_related("merchant")
        .filter(merchant=merchant, pk=payment_id)
        .first()
    )
    if payment is None:
        raise NotFound(f"No such payment: '{payment_id}'.", param="id")
    return payment


def payment_list(
    *, merchant: Merchant, status: str | None = None, created_gte: datetime | None = None,
    created_lt: datetime | None = None,
) -> QuerySet[Payment]:
    rows = Payment.objects.select_related("merchant").filter(merchant=merchant)
    if status:
        rows = rows.filter(status=status)
    if created_gte:
        rows = rows.filter(created_at__gte=created_gte)
    if created_lt:
        rows = rows.filter(created_at__lt=created_lt)
    return rows


def refund_get(*, merchant: Merchant, refund_id: str) -> Refund:
    refund = Refund.objects.filter(merchant=merchant, pk=refund_id).first()
    if refund is None:
        raise NotFound(f"No such refund: '{refund_id}'.", param="id")
    return refund


def refund_list(*, merchant: Merchant, payment_id: str | None = None) -> QuerySet[Refund]:
    rows = Refund.objects.filter(merchant=merchant)
    if payment_id:
        rows = rows.filter(payment_id=payment_id)
    return rows


def dispute_get(*, merchant: Merchant, dispute_id: str) -> Dispute:
    dispute = Dispute.objects.filter(merchant=merchant, pk=dispute_id).first()
    if dispute is None:
        raise NotFound(f"No such dispute: '{dispute_id}'.", param="id")
    return dispute


def dispute_list(*, merchant: Merchant, payment_id: str | None = None,
                 status: str | None = None) -> QuerySet[Dispute]:
    rows = Dispute.objects.filter(merchant=merchant)
    if payment_id:
        rows = rows.filter(payment_id=payment_id)
    if status:
        rows = rows.filter(status=status)
    return rows


# Refunds that hold part of the captured amount: a pending one may still succeed.
RESERVING_REFUND_STATUSES = (RefundStatus.PENDING, RefundStatus.SUCCEEDED)


def refunds_reserved(payment: Payment) -> int:
    """Pending + succeeded refunds of a payment, in minor units."""
    return payment.refunds.filter(status__in=RESERVING_REFUND_STATUSES).aggregate(
        total=Sum("amount"))["total"] or 0


def refundable_amount(payment: Payment) -> int:
    """What a refund may still take: captured, less disputes and pending or succeeded refunds.
    `refund_create` reads it under the payment's row lock and decides; pages only show it."""
    return max(0, payment.amount_captured - payment.amount_disputed - refunds_reserved(payment))
