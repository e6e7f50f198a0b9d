"""The one way any app calls a provider and records what it said: payments, wallet and the
janitor all go through `provider_call` and `attempt_record`.

A call runs outside any transaction, asks the provider's circuit breaker first when it would
start something new (`gate=True`), is timed and counted, feeds the breaker, and turns an
exception into an UNKNOWN outcome: we cannot know whether the provider acted, so the caller
must only look it up or re-send the same idempotency key, never fail over. Timeouts are the
adapter's transport's (`HttpAdapter.timeout`, from PROVIDER_TIMEOUTS); one comes back here as
UNKNOWN like any other lost answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from django.utils import timezone

from core import metrics
from providers.base import (
    DisputeResult,
    MovementResult,
    MovementStatus,
    Outcome,
    ProviderResult,
    TokenResult,
)
from providers.breaker import breaker_allow, breaker_record_result
from providers.registry import UnknownProvider, get_provider

logger = logging.getLogger(__name__)

# Operations of the movement port (`MovementProvider`); they answer with a MovementResult.
MOVEMENT_OPERATIONS = frozenset({"payout_create", "payout_retrieve", "deposit_create",
                                 "deposit_retrieve"})
PAYMENT_OPERATIONS = frozenset({"authorize", "capture", "void", "refund", "retrieve",
                                "increment_authorization"})
# Operations on a dispute; they answer with a DisputeResult.
DISPUTE_OPERATIONS = frozenset({"dispute_submit_evidence", "dispute_retrieve"})
# The card vault (saved payment methods); they answer with a TokenResult.
TOKEN_OPERATIONS = frozenset({"token_retrieve", "token_enroll"})

Result = ProviderResult | MovementResult | DisputeResult | TokenResult


def _answer_type(operation: str) -> type[Result]:
    """The result type an operation answers with (also what a refusal or a raise becomes)."""
    if operation in MOVEMENT_OPERATIONS:
        return MovementResult
    if operation in DISPUTE_OPERATIONS:
        return DisputeResult
    return TokenResult if operation in TOKEN_OPERATIONS else ProviderResult


def supports(provider_code: str, operation: str) -> bool:
    """Whether an enabled adapter offers `operation` (not every adapter has payouts or
    incremental authorization) or declares the feature (`multicapture = True`)."""
    try:
        offered = getattr(get_provider(provider_code), operation, None)
    except UnknownProvider:
        return False
    return offered is True or callable(offered)


def provider_call(provider_code: str, operation: str, request: Any, *, gate: bool = False
                  ) -> Any:
    """Call `operation` of a provider with `request` and return its normalised answer.

    `gate=True` for a call that starts something (an authorization, a payout or deposit): an
    open breaker answers DECLINED, retryable, without sending, so the caller may fail over.
    Captures, voids, refunds and lookups of what already exists are always sent."""
    movement = operation in MOVEMENT_OPERATIONS
    if operation not in (MOVEMENT_OPERATIONS | PAYMENT_OPERATIONS | DISPUTE_OPERATIONS
                         | TOKEN_OPERATIONS):
        raise ValueError(f"{operation!r} is not a provider operation")
    answer = _answer_type(operation)
    if gate and not breaker_allow(provider_code):
        closed: dict[str, Any] = {"status": MovementStatus.FAILED} if movement else {}
        return answer(outcome=Outcome.DECLINED, error_code="provider_unavailable",
                      error_message="Circuit breaker open; not sent.", retryable=True, **closed)
    started = time.monotonic()
    result: Result
    try:
        result = getattr(get_provider(provider_code), operation)(request)
    except Exception:
        logger.exception("provider %s %s raised; treating the outcome as unknown",
                         provider_code, operation)
        result = answer(
            outcome=Outcome.UNKNOWN, error_code="processing_error",
            error_message="The provider call failed unexpectedly; the outcome is unknown.")
    # The breaker reads only `outcome` and `error_code`, which both result types carry.
    breaker_record_result(provider_code, result)  # type: ignore[arg-type]
    metrics.PROVIDER_CALLS.labels(provider_code, operation, result.outcome.value,
                                  result.error_code or "none").inc()
    metrics.PROVIDER_LATENCY.labels(provider_code, operation).observe(time.monotonic() - started)
    return result


class AttemptRow(Protocol):
    """The columns every attempt model (payments' and the wallet's) shares."""

    status: str
    provider_reference: str
    error_code: str
    error_message: str
    exchange: dict[str, Any]
    latency_ms: int | None
    completed_at: datetime | None

    def save(self, *args: Any, **kwargs: Any) -> None: ...


def attempt_record(attempt: AttemptRow, result: Result, *, statuses: Mapping[Outcome, str]
                   ) -> None:
    """Write an answer onto its attempt (the caller holds the attempt's row lock). `statuses`
    maps each outcome to the attempt model's own status. A reference already known is kept
    when the answer names none."""
    attempt.status = statuses[result.outcome]
    attempt.provider_reference = result.provider_reference or attempt.provider_reference
    attempt.error_code = result.error_code[:64]
    attempt.error_message = result.error_message[:500]
    attempt.exchange = result.exchange
    attempt.latency_ms = result.latency_ms
    attempt.completed_at = timezone.now()
    attempt.save()
