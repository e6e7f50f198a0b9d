"""A circuit breaker per provider, shared by every process through a `ProviderBreaker` row.

closed → open after `failure_threshold` failures within `window_seconds` (a success resets the
count); open → half-open once `cooldown_seconds` have passed, letting exactly one probe call
through; the probe's success closes it, its failure opens it again. Every change happens in a
short transaction under the row lock; call these outside any transaction of your own and never
around the provider call itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from providers import conf
from providers.base import Outcome, ProviderResult
from providers.models import BreakerState, ProviderBreaker

# Error codes that say the provider itself is sick (as opposed to a card being declined).
HEALTH_FAILURES = frozenset({
    "provider_unavailable", "provider_authentication_failed", "timeout", "outcome_unknown",
})


def _config() -> dict[str, int]:
    return {**conf.PROVIDER_BREAKER, **(getattr(settings, "PROVIDER_BREAKER", None) or {})}


def _locked(code: str) -> ProviderBreaker:
    row = ProviderBreaker.objects.select_for_update().filter(pk=code).first()
    if row is None:
        # Two processes may race to create it; the loser's insert is ignored.
        ProviderBreaker.objects.bulk_create([ProviderBreaker(provider=code)],
                                            ignore_conflicts=True)
        row = ProviderBreaker.objects.select_for_update().get(pk=code)
    return row


def _probe_due(row: ProviderBreaker, now: datetime, config: dict[str, int]) -> bool:
    """May a probe go through now? Open and cooled down, or half-open with a stale probe."""
    if row.state == BreakerState.OPEN:
        return row.opened_at is None or (
            now >= row.opened_at + timedelta(seconds=config["cooldown_seconds"]))
    if row.state == BreakerState.HALF_OPEN:
        return row.probe_started_at is None or (
            now >= row.probe_started_at + timedelta(seconds=config["probe_timeout_seconds"]))
    return True


def breaker_allow(code: str) -> bool:
    """May we call this provider now? True when closed; when open and cooled down, True once
    (this caller becomes the half-open probe and must report back)."""
    row = ProviderBreaker.objects.filter(pk=code).only("state").first()
    if row is None or row.state == BreakerState.CLOSED:
        return True  # the common case takes no lock
    now, config = timezone.now(), _config()
    with transaction.atomic():
        row = _locked(code)
        if row.state == BreakerState.CLOSED:
            return True
        if not _probe_due(row, now, config):
            return False
        row.state, row.probe_started_at = BreakerState.HALF_OPEN, now
        row.save(update_fields=["state", "probe_started_at", "updated_at"])
        return True


def breaker_record_success(code: str) -> None:
    row = ProviderBreaker.objects.filter(pk=code).only("state", "failure_count").first()
    if row is None or (row.state == BreakerState.CLOSED and row.failure_count == 0):
        return  # nothing to reset: no write on the hot path
    with transaction.atomic():
        row = _locked(code)
        if row.state == BreakerState.OPEN:
            return  # a call that started before it opened; only the probe may close it
        row.state, row.failure_count = BreakerState.CLOSED, 0
        row.window_started_at = row.opened_at = row.probe_started_at = None
        row.save()


def breaker_record_failure(code: str) -> None:
    now, config = timezone.now(), _config()
    with transaction.atomic():
        row = _locked(code)
        if row.state == BreakerState.OPEN:
            return
        if row.state == BreakerState.HALF_OPEN:  # the probe failed: back to open, cool down
            row.state, row.opened_at, row.probe_started_at = BreakerState.OPEN, now, None
            row.save()
            return
        window = timedelta(seconds=config["window_seconds"])
        if row.window_started_at is None or now - row.window_started_at > window:
            row.failure_count, row.window_started_at = 1, now
        else:
            row.failure_count += 1
        if row.failure_count >= config["failure_threshold"]:
            row.state, row.opened_at = BreakerState.OPEN, now
        row.save()


def breaker_record_result(code: str, result: ProviderResult) -> None:
    """Record a provider call by its result: unknown outcomes and provider-side errors are
    failures; approvals and ordinary declines prove the provider is up."""
    if result.outcome == Outcome.UNKNOWN or result.error_code in HEALTH_FAILURES:
        breaker_record_failure(code)
    else:
        breaker_record_success(code)


def breaker_skipped(codes: Iterable[str]) -> set[str]:
    """Providers routing should leave out now (read-only, no lock): open and still cooling down,
    or half-open with a probe in flight. A provider due for a probe is not skipped; whoever
    calls it must ask `breaker_allow` first."""
    codes = list(codes)
    return breakers_skipped_among(
        ProviderBreaker.objects.filter(pk__in=codes).exclude(state=BreakerState.CLOSED))


def breakers_skipped_among(rows: Iterable[ProviderBreaker]) -> set[str]:
    """`breaker_skipped` for breaker rows the caller has read itself (routing reads them in the
    same statement as its rules)."""
    now, config = timezone.now(), _config()
    return {row.provider for row in rows
            if row.state != BreakerState.CLOSED and not _probe_due(row, now, config)}
