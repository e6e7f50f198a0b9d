"""Reads for providers' own tables."""

from __future__ import annotations

from providers.models import ProviderBreaker


def breaker_states() -> list[tuple[str, str]]:
    """(provider, state) of every circuit breaker that has a row."""
    return list(ProviderBreaker.objects.order_by("provider").values_list("provider", "state"))
