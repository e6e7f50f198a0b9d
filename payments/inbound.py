"""Inbound provider events about payments, refunds and disputes: the applier the inbox
(`webhooks.inbound`) hands them to, registered in PaymentsConfig.ready."""

from __future__ import annotations

from payments import services
from providers.base import InboundEvent
from webhooks.inbound import Confirmed


def provider_event_apply(event: InboundEvent, *, confirmed: Confirmed | None,
                         give_up_holding: bool) -> str:
    """Apply one verified (or lookup-confirmed) event through `payment_provider_event_apply`."""
    dispute = event.payload.get("dispute")
    reason = str(dispute.get("reason", "")) if isinstance(dispute, dict) else ""
    return services.payment_provider_event_apply(
        provider=event.provider, type=event.type, provider_reference=event.provider_reference,
        merchant_reference=event.merchant_reference, amount=event.amount,
        currency=event.currency, status=event.status,
        error_code=event.error_code, refund_reference=event.refund_reference,
        dispute_reference=event.dispute_reference, reason=reason,
        confirmed_refunded=confirmed.refunded if confirmed else None,
        confirmed_disputed=confirmed.disputed if confirmed else None,
        give_up_holding=give_up_holding, evidence_due_by=event.evidence_due_by)
