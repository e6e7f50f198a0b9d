"""What each provider calls the webhook events we receive: one table that the adapters read
notices by and the simulator writes them with. Django-free, since the simulator imports it."""

from __future__ import annotations

PROVIDERS = ("cielo", "rede", "getnet")
EVENT_NAMES = {  # our event type → (Cielo ChangeType, Rede event, Getnet event_type)
    "payment.authorized": ("PaymentAuthorized", "transaction.authorized", "PAYMENT_AUTHORIZED"),
    "payment.captured": ("PaymentCaptured", "transaction.captured", "PAYMENT_CONFIRMED"),
    "payment.declined": ("PaymentDenied", "transaction.denied", "PAYMENT_DENIED"),
    "payment.voided": ("PaymentVoided", "transaction.canceled", "PAYMENT_CANCELED"),
    "refund.succeeded": ("RefundConfirmed", "refund.done", "REFUND_APPROVED"),
    "dispute.opened": ("ChargebackOpened", "chargeback.opened", "DISPUTE_OPENED"),
    "dispute.won": ("ChargebackReversed", "chargeback.won", "DISPUTE_WON"),
    "dispute.lost": ("ChargebackAccepted", "chargeback.lost", "DISPUTE_LOST"),
    "payout.paid": ("PayoutPaid", "payout.paid", "PAYOUT_PAID"),
    "payout.failed": ("PayoutFailed", "payout.failed", "PAYOUT_FAILED"),
    "deposit.confirmed": ("DepositConfirmed", "deposit.confirmed", "DEPOSIT_CONFIRMED"),
    "deposit.failed": ("DepositFailed", "deposit.failed", "DEPOSIT_FAILED"),
}


def event_names(provider: str) -> dict[str, str]:
    """Our event type → `provider`'s name for it."""
    column = PROVIDERS.index(provider)
    return {ours: names[column] for ours, names in EVENT_NAMES.items()}


def event_types(provider: str) -> dict[str, str]:
    """`provider`'s event name → our event type."""
    return {theirs: ours for ours, theirs in event_names(provider).items()}
