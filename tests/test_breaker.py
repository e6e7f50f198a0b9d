"""The per-provider circuit breaker: opens after N failures in a window, routing skips it,
one half-open probe after the cool-down, closed again by a successful probe. Time is moved
with time-machine, never slept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from providers.base import Outcome, ProviderResult
from providers.breaker import (
    breaker_allow,
    breaker_record_failure,
    breaker_record_result,
    breaker_record_success,
)
from providers.models import BreakerState, ProviderBreaker, RoutingRule, RoutingTarget
from providers.routing import route
from tests.threads import run_threads

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _tuning(settings: Any) -> None:
    settings.DEFAULT_PROVIDER = "sandbox"
    settings.PROVIDER_BREAKER = {"failure_threshold": 3, "window_seconds": 60,
                                 "cooldown_seconds": 30, "probe_timeout_seconds": 20}


def state(code: str = "cielo") -> str:
    row = ProviderBreaker.objects.filter(pk=code).first()
    return row.state if row else BreakerState.CLOSED


def fail(times: int, code: str = "cielo") -> None:
    for _ in range(times):
        breaker_record_failure(code)


def routed() -> list[str]:
    return route(merchant_id="acct_1", currency="brl", amount=1000,
                 payment_method="pm_card_visa", livemode=False)


@pytest.mark.django_db
def test_a_new_provider_is_allowed_and_successes_write_nothing() -> None:
    assert breaker_allow("cielo")
    breaker_record_success("cielo")
    assert not ProviderBreaker.objects.exists()


@pytest.mark.django_db
def test_the_breaker_opens_after_n_failures_within_the_window() -> None:
    with time_machine.travel(START, tick=False) as clock:
        fail(2)
        assert state() == BreakerState.CLOSED and breaker_allow("cielo")
        clock.shift(timedelta(seconds=10))
        fail(1)
        assert state() == BreakerState.OPEN
        assert not breaker_allow("cielo")


@pytest.mark.django_db
def test_failures_spread_wider_than_the_window_do_not_open_it() -> None:
    with time_machine.travel(START, tick=False) as clock:
        fail(2)
        clock.shift(timedelta(seconds=61))
        fail(2)
        assert state() == BreakerState.CLOSED


@pytest.mark.django_db
def test_a_success_resets_the_failure_count() -> None:
    fail(2)
    breaker_record_success("cielo")
    fail(2)
    assert state() == BreakerState.CLOSED


@pytest.mark.django_db
def test_routing_skips_an_open_provider_until_a_probe_succeeds() -> None:
    rule = RoutingRule.objects.create(name="all")
    for position, code in enumerate(["cielo", "rede"]):
        RoutingTarget.objects.create(rule=rule, provider=code, position=position)
    with time_machine.travel(START, tick=False) as clock:
        fail(3)
        assert routed() == ["rede"]
        clock.shift(timedelta(seconds=29))
        assert routed() == ["rede"] and not breaker_allow("cielo")

        clock.shift(timedelta(seconds=1))  # cooled down: back in the list, one probe allowed
        assert routed() == ["cielo", "rede"]
        assert breaker_allow("cielo")
        assert state() == BreakerState.HALF_OPEN
        assert not breaker_allow("cielo")  # only one probe at a time
        assert routed() == ["rede"]  # nor does routing offer it while the probe runs

        breaker_record_success("cielo")
        assert state() == BreakerState.CLOSED
        assert routed() == ["cielo", "rede"]
        fail(2)
        assert state() == BreakerState.CLOSED  # the count started again from zero


@pytest.mark.django_db
@pytest.mark.parametrize("probe_fails, closed_for", [(True, 30), (False, 20)],
                         ids=["failed-probe-opens-for-a-full-cool-down",
                              "silent-probe-frees-its-slot"])
def test_after_a_probe_one_more_is_allowed_only_when_its_time_is_up(probe_fails,
                                                                    closed_for) -> None:
    """A probe that fails opens the breaker again for a full cool-down (30 s); one that never
    reports back holds its slot for 20 s, then another probe may go."""
    with time_machine.travel(START, tick=False) as clock:
        fail(3)
        clock.shift(timedelta(seconds=30))
        assert breaker_allow("cielo")
        if probe_fails:
            breaker_record_failure("cielo")
            assert state() == BreakerState.OPEN
        clock.shift(timedelta(seconds=closed_for - 1))
        assert not breaker_allow("cielo")
        clock.shift(timedelta(seconds=1))
        assert breaker_allow("cielo")


@pytest.mark.django_db
def test_a_late_success_from_before_it_opened_does_not_close_it() -> None:
    fail(3)
    breaker_record_success("cielo")
    assert state() == BreakerState.OPEN


@pytest.mark.django_db
def test_breakers_are_per_provider() -> None:
    fail(3, "cielo")
    assert breaker_allow("rede")
    assert state("rede") == BreakerState.CLOSED


@pytest.mark.django_db
@pytest.mark.parametrize(("result", "counts_as_failure"), [
    (ProviderResult(outcome=Outcome.UNKNOWN, error_code="timeout"), True),
    (ProviderResult(outcome=Outcome.DECLINED, error_code="provider_unavailable"), True),
    (ProviderResult(outcome=Outcome.DECLINED, error_code="card_declined"), False),
    (ProviderResult(outcome=Outcome.APPROVED), False),
])
def test_results_are_classified(result: ProviderResult, counts_as_failure: bool) -> None:
    fail(2)
    breaker_record_result("cielo", result)
    fail(1)
    assert (state() == BreakerState.OPEN) is counts_as_failure


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_get_exactly_one_half_open_probe() -> None:
    with time_machine.travel(START, tick=False) as clock:
        fail(3)
        clock.shift(timedelta(seconds=31))
        answers, errors = run_threads(8, lambda i: breaker_allow("cielo"))
    assert not errors
    assert sorted(answers) == [False] * 7 + [True]
