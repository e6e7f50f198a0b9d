"""Payments, refunds, disputes, customers and payment methods as plain dicts: the API's
responses and the events' `data` (webhook payloads), built here so services never depend on the
API layer."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from core.payloads import provider_object_to_dict, unix
from payments.models import (
    Customer,
    Dispute,
    DisputeStatus,
    EvidenceFile,
    FileType,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
)

_FILE_TYPES = {FileType.PDF: "pdf", FileType.PNG: "png", FileType.JPEG: "jpg"}


def payment_to_dict(payment: Payment) -> dict[str, Any]:
    """A payment as the API and its events show it."""
    return provider_object_to_dict(
        payment, "payment",
        capture_method=payment.capture_method,
        payment_method=payment.payment_method,
        customer=payment.customer_id,
        off_session=payment.off_session,
        amount_authorized=payment.amount_authorized,
        amount_captured=payment.amount_captured,
        amount_refunded=payment.amount_refunded,
        amount_disputed=payment.amount_disputed,
        cancellation_reason=payment.cancellation_reason or None,
        authorization_expires=unix(payment.authorization_expires_at),
        return_url=payment.return_url or None,
        next_action=next_action_to_dict(payment),
    )


def next_action_to_dict(payment: Payment) -> dict[str, Any] | None:
    """What the customer must do before the payment can go on (Stripe's shape), or None."""
    if payment.status != PaymentStatus.REQUIRES_ACTION:
        return None
    return {"type": "redirect_to_url",
            "redirect_to_url": {"url": payment.next_action_url,
                                "return_url": payment.return_url or None},
            "expires": unix(payment.action_expires_at)}


def _of_payment(row: Refund | Dispute, kind: str, **own: Any) -> dict[str, Any]:
    """The fields refunds and disputes share, with the kind's own after `currency`."""
    return {"id": row.id, "object": kind, "payment": row.payment_id, "amount": row.amount,
            "currency": row.currency, **own, "created": int(row.created_at.timestamp())}


def refund_to_dict(refund: Refund) -> dict[str, Any]:
    """A refund as the API and its events show it."""
    return _of_payment(refund, "refund", status=refund.status, reason=refund.reason or None,
                       metadata=refund.metadata, failure_code=refund.failure_code or None,
                       failure_message=refund.failure_message or None)


def dispute_to_dict(dispute: Dispute) -> dict[str, Any]:
    """A dispute as the API and its events show it."""
    return _of_payment(dispute, "dispute", reason=dispute.reason, status=dispute.status,
                       evidence=dispute.evidence,
                       evidence_submitted=unix(dispute.evidence_submitted_at),
                       evidence_details={
                           "due_by": unix(dispute.due_by),
                           "has_evidence": bool(dispute.evidence),
                           "submitted": dispute.evidence_submitted_at is not None,
                           "past_due": (dispute.status == DisputeStatus.NEEDS_RESPONSE
                                        and dispute.due_by <= timezone.now())},
                       due_by=unix(dispute.due_by), decided_by=dispute.decided_by or None,
                       closed=unix(dispute.closed_at))


def file_to_dict(file: EvidenceFile) -> dict[str, Any]:
    """An uploaded file's description (never its content: that is GET /v1/files/{id}/contents)."""
    return {"id": file.id, "object": "file", "purpose": file.purpose,
            "type": _FILE_TYPES[FileType(file.content_type)], "filename": file.filename,
            "size": file.size, "sha256": file.sha256,
            "url": f"/api/v1/files/{file.id}/contents", "created": unix(file.created_at)}


def customer_to_dict(customer: Customer) -> dict[str, Any]:
    """A customer as the API and its events show it."""
    return {
        "id": customer.id,
        "object": "customer",
        "email": customer.email or None,
        "name": customer.name or None,
        "metadata": customer.metadata,
        "livemode": customer.merchant.is_live,
        "created": unix(customer.created_at),
    }


def payment_method_to_dict(method: PaymentMethod) -> dict[str, Any]:
    """A saved payment method as the API and its events show it: the card as its acquirer
    described it and the acquirers it is enrolled with, never a token."""
    return {
        "id": method.id,
        "object": "payment_method",
        "type": "card",
        "card": {"brand": method.brand or None, "last4": method.last4 or None,
                 "exp_month": method.exp_month, "exp_year": method.exp_year},
        "customer": method.customer_id,
        "providers": sorted(token.provider for token in method.tokens.all()),
        "detached": method.detached_at is not None,
        "metadata": method.metadata,
        "livemode": method.merchant.is_live,
        "created": unix(method.created_at),
    }
