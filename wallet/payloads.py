"""Deposits and payouts as plain dicts: the API's responses and the events' `data` (webhook
payloads), built here so services never depend on the API layer."""

from __future__ import annotations

from typing import Any

from wallet.models import Deposit, Movement, Payout


def _movement_to_dict(row: Movement, kind: str, **own: Any) -> dict[str, Any]:
    """The fields deposits and payouts share, with the kind's own after `status`."""
    return {
        "id": row.id,
        "object": kind,
        "amount": row.amount,
        "currency": row.currency,
        "status": row.status,
        **own,
        "description": row.description,
        "metadata": row.metadata,
        "provider": row.provider or None,
        "failure_code": row.failure_code or None,
        "failure_message": row.failure_message or None,
        "livemode": row.merchant.is_live,
        "created": int(row.created_at.timestamp()),
    }


def deposit_to_dict(deposit: Deposit) -> dict[str, Any]:
    return _movement_to_dict(deposit, "deposit", method=deposit.method)


def payout_to_dict(payout: Payout) -> dict[str, Any]:
    return _movement_to_dict(payout, "payout", destination=payout.destination)
