"""Test helpers for provider notices: a Cielo notice signed with the test secret and processed
as the worker would, a bounded wait on another process, a merchant's available balance."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.test import Client

from webhooks.models import ProviderEvent

T = TypeVar("T")


def post_signed_cielo(payload: dict[str, Any]) -> tuple[int, str | None]:
    """POST the notice to our Cielo webhook; when stored, process it at once. Returns the HTTP
    status and the inbox row's new status."""
    from providers.simulator.cielo import CieloDialect
    from webhooks import inbound

    payload = {"OccurredAt": datetime.now(UTC).isoformat(), **payload}
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = CieloDialect().webhook_headers("whsec_dev_cielo", body, time.time())
    response = Client().post("/webhooks/providers/cielo/", data=body,
                             content_type="application/json",
                             **{f"HTTP_{k.upper().replace('-', '_')}": v
                                for k, v in headers.items()})
    if response.status_code != 200:
        return response.status_code, None
    row = ProviderEvent.objects.get(provider_event_id=payload["NotificationId"])
    return 200, inbound.provider_event_process(event_id=row.pk)


def wait_until(condition: Callable[[], T], timeout: float = 20.0) -> T:
    """Poll until `condition()` is truthy (another process's threads are doing the work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # waiting on another process, bounded by the deadline
    raise AssertionError("condition not met in time")


def available_balance(merchant: Any, currency: str) -> int:
    from ledger.selectors import balance_get

    rows = balance_get(merchant=merchant)["available"]
    return next((row["amount"] for row in rows if row["currency"] == currency), 0)
