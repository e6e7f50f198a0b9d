"""Where lower layers report a disagreement for people (a reconciliation break) without importing
the reconciliation app: the reconciliation app registers the writer when Django starts.

Payments, wallet and the inbound provider inbox call `break_report(...)` when a provider fact
conflicts with what we hold (an amount or currency it confirmed that differs from ours, a
chargeback on money already refunded, a reference that collides): the fact is kept as evidence,
no money moves on it, and finance staff see the break in the back-office queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BreakSpec:
    """One finding. `(type, key)` names it: the same finding reported twice is one break."""

    type: str
    key: str
    provider: str = ""
    payment_id: str = ""
    refund_id: str = ""
    provider_reference: str = ""
    refund_reference: str = ""
    currency: str = ""
    our_amount: int | None = None
    provider_amount: int | None = None
    our_data: dict[str, Any] = field(default_factory=dict)
    provider_data: dict[str, Any] = field(default_factory=dict)
    settlement_line_id: int | None = None


_writer: Callable[[Sequence[BreakSpec]], int] | None = None


def register_break_writer(writer: Callable[[Sequence[BreakSpec]], int]) -> None:
    global _writer  # set once, by reconciliation's AppConfig.ready
    _writer = writer


def break_report(spec: BreakSpec) -> int:
    """Open the break in the caller's transaction (1 when new, 0 when already recorded)."""
    if _writer is None:  # fail loudly: a conflict nobody records would be a silent money hole
        raise RuntimeError("No break writer is registered (is 'reconciliation' installed?).")
    logger.warning("reconciliation break %s %s: provider=%s payment=%s ours=%s theirs=%s",
                   spec.type, spec.key, spec.provider, spec.payment_id, spec.our_amount,
                   spec.provider_amount)
    return _writer([spec])
