"""Deposits and payouts as plain dicts: the API's responses and the events' `data` (webhook
payloads), built here so services never depend on the API layer."""

from __future__ import annotations

from typing import Any

from core.payloads import provider_object_to_dict
from wallet.models import Deposit, Payout


def deposit_to_dict(deposit: Deposit) -> dict[str, Any]:
    return provider_object_to_dict(deposit, "deposit", method=deposit.method)


def payout_to_dict(payout: Payout) -> dict[str, Any]:
    return provider_object_to_dict(payout, "payout", destination=payout.destination)
