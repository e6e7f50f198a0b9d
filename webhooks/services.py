"""Writes for events (and, with the outbox, the deliveries they cause)."""

from __future__ import annotations

from typing import Any

from core.models import Merchant
from webhooks.models import Event


def event_record(*, merchant: Merchant, type: str, obj: dict[str, Any]) -> Event:
    """Record that `type` happened to `obj` (its API representation). Call inside the
    transaction that made the change, so the event exists exactly when the change does."""
    return Event.objects.create(
        merchant=merchant, type=type, object_type=obj["object"], object_id=obj["id"], data=obj,
    )
