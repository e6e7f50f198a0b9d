"""Payments, refunds and disputes as plain dicts: the API's responses and the events' `data`
(webhook payloads), built here so services never depend on the API layer."""

from __future__ import annotations

from typing import Any

from payments.models import Dispute, Payment, Refund


def payment_to_dict(payment: Payment) -> dict[str, Any]:
    """A payment as the API and its events show it."""
    return {
        "id": payment.id,
        "object": "payment",
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "capture_method": payment.capture_method,
        "payment_method": payment.payment_method,
        "amount_authorized": payment.amount_authorized,
        "amount_captured": payment.amount_captured,
        "amount_refunded": payment.amount_refunded,
        "amount_disputed": payment.amount_disputed,
        "description": payment.description,
        "metadata": payment.metadata,
        "provider": payment.provider or None,
        "failure_code": payment.failure_code or None,
        "failure_message": payment.failure_message or None,
        "livemode": payment.merchant.is_live,
        "created": int(payment.created_at.timestamp()),
    }


def refund_to_dict(refund: Refund) -> dict[str, Any]:
    """A refund as the API and its events show it."""
    return {
        "id": refund.id,
        "object": "refund",
        "payment": refund.payment_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "status": refund.status,
        "reason": refund.reason or None,
        "metadata": refund.metadata,
        "failure_code": refund.failure_code or None,
        "failure_message": refund.failure_message or None,
        "created": int(refund.created_at.timestamp()),
    }


def dispute_to_dict(dispute: Dispute) -> dict[str, Any]:
    """A dispute as the API and its events show it."""
    return {
        "id": dispute.id,
        "object": "dispute",
        "payment": dispute.payment_id,
        "amount": dispute.amount,
        "currency": dispute.currency,
        "reason": dispute.reason,
        "status": dispute.status,
        "evidence": dispute.evidence,
        "evidence_submitted": (int(dispute.evidence_submitted_at.timestamp())
                               if dispute.evidence_submitted_at else None),
        "due_by": int(dispute.due_by.timestamp()),
        "created": int(dispute.created_at.timestamp()),
    }
