"""Reads for payments and refunds, always scoped to one merchant."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from core.errors import NotFound
from core.models import Merchant
from payments.models import Dispute, Payment, Refund


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
