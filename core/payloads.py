"""What every API object's plain-dict body shares: Unix timestamps, and the fields of the objects
that move a merchant's money through a provider (payments, deposits, payouts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def unix(value: datetime | None) -> int | None:
    """Seconds since the epoch, or None for a moment that has not happened."""
    return int(value.timestamp()) if value is not None else None


def provider_object_to_dict(row: Any, kind: str, **own: Any) -> dict[str, Any]:
    """A payment, deposit or payout as the API and its events show it: the fields they share,
    with the kind's own fields after `status` (the order their bodies have always had)."""
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
        # Since API version 2026-12-06; core.versions renders failure_code and failure_message
        # for clients of an earlier version.
        "last_error": ({"code": row.failure_code, "message": row.failure_message or None}
                       if row.failure_code else None),
        "livemode": row.merchant.is_live,
        "created": int(row.created_at.timestamp()),
    }
