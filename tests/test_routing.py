"""Routing rules as data: matching, priorities, weighted volume splits, fallbacks, breakers."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from providers.breaker import breaker_record_failure
from providers.models import RoutingRule, RoutingTarget
from providers.routing import order_candidates, payment_method_brand, route

pytestmark = pytest.mark.django_db


def rule(*targets: tuple[str, int], priority: int = 100, **conditions: Any) -> RoutingRule:
    created = RoutingRule.objects.create(name=f"rule {priority}", priority=priority,
                                         **conditions)
    for position, (provider, weight) in enumerate(targets):
        RoutingTarget.objects.create(rule=created, provider=provider, position=position,
                                     weight=weight)
    return created


def routed(merchant_id: str = "acct_1", currency: str = "brl", amount: int = 1000,
           payment_method: str = "pm_card_visa", rng: random.Random | None = None,
           livemode: bool = False) -> list[str]:
    """A test-mode route by default: in the test settings every provider is test (simulator)."""
    return route(merchant_id=merchant_id, currency=currency, amount=amount,
                 payment_method=payment_method, rng=rng, livemode=livemode)


@pytest.fixture(autouse=True)
def _default_provider(settings: Any) -> None:
    settings.DEFAULT_PROVIDER = "sandbox"
    settings.PROVIDER_BREAKER = {"failure_threshold": 2, "window_seconds": 60,
                                 "cooldown_seconds": 30, "probe_timeout_seconds": 30}


def test_no_matching_rule_falls_back_to_the_default_provider_in_test_mode_only(
        settings: Any) -> None:
    rule(("cielo", 0), currency="usd")
    assert routed(currency="brl") == ["sandbox"]
    settings.PROVIDERS_LIVE = ["cielo"]
    assert routed(currency="brl", livemode=True) == []
    assert routed(currency="usd", livemode=True) == ["cielo"]


def test_an_unweighted_rule_lists_its_providers_in_order() -> None:
    rule(("rede", 0), ("getnet", 0), ("cielo", 0))
    assert routed() == ["rede", "getnet", "cielo"]


def test_the_lowest_priority_number_wins_and_inactive_rules_are_ignored() -> None:
    rule(("cielo", 0), priority=50)
    rule(("rede", 0), priority=10, is_active=False)
    rule(("getnet", 0), priority=90)
    assert routed() == ["cielo"]


@pytest.mark.parametrize(("conditions", "matches", "misses"), [
    ({"merchant_id": "acct_big"}, {"merchant_id": "acct_big"}, {"merchant_id": "acct_small"}),
    ({"currency": "brl"}, {"currency": "BRL"}, {"currency": "usd"}),
    ({"min_amount": 100, "max_amount": 500}, {"amount": 500}, {"amount": 501}),
    ({"min_amount": 100, "max_amount": 500}, {"amount": 100}, {"amount": 99}),
    ({"payment_method_brand": "mastercard"}, {"payment_method": "pm_card_mastercard"},
     {"payment_method": "pm_card_visa"}),
])
def test_each_condition_narrows_the_rule(conditions: dict[str, Any], matches: dict[str, Any],
                                         misses: dict[str, Any]) -> None:
    rule(("getnet", 0), priority=1, **conditions)
    rule(("rede", 0), priority=2)
    assert routed(**matches) == ["getnet"]
    assert routed(**misses) == ["rede"]


def test_a_70_30_split_over_1000_routings_lands_within_5_points() -> None:
    rule(("cielo", 70), ("rede", 30), ("getnet", 0))
    rng = random.Random(20260105)
    routes = [routed(rng=rng) for _ in range(1000)]
    firsts = Counter(candidates[0] for candidates in routes)
    assert abs(firsts["cielo"] / 1000 - 0.70) <= 0.05
    assert abs(firsts["rede"] / 1000 - 0.30) <= 0.05
    assert firsts["getnet"] == 0
    # Whoever goes first, the others stay behind it as fallbacks, unweighted last.
    assert {tuple(c) for c in routes} == {("cielo", "rede", "getnet"),
                                          ("rede", "cielo", "getnet")}


def test_the_split_is_reproducible_with_a_seeded_rng() -> None:
    rule(("cielo", 50), ("rede", 50))
    first = [routed(rng=random.Random(7))[0] for _ in range(5)]
    again = [routed(rng=random.Random(7))[0] for _ in range(5)]
    assert first == again


def test_an_open_breaker_takes_its_provider_out_and_the_split_goes_to_the_rest() -> None:
    rule(("cielo", 70), ("rede", 30), ("getnet", 0))
    breaker_record_failure("cielo")
    breaker_record_failure("cielo")
    rng = random.Random(1)
    assert {tuple(routed(rng=rng)) for _ in range(50)} == {("rede", "getnet")}


def test_when_every_candidate_is_open_the_default_provider_is_tried_then_nothing() -> None:
    rule(("cielo", 0), ("rede", 0))
    for code in ("cielo", "cielo", "rede", "rede"):
        breaker_record_failure(code)
    assert routed() == ["sandbox"]
    breaker_record_failure("sandbox")
    breaker_record_failure("sandbox")
    assert routed() == []


def test_when_every_live_candidate_is_open_live_routing_is_empty(settings: Any) -> None:
    settings.PROVIDERS_LIVE = ["cielo", "rede"]
    rule(("cielo", 0), ("rede", 0), ("sandbox", 0))
    assert routed(livemode=True) == ["cielo", "rede"]
    for code in ("cielo", "cielo", "rede", "rede"):
        breaker_record_failure(code)
    assert routed(livemode=True) == []


def test_order_candidates_is_pure_and_keeps_unweighted_fallbacks_in_order() -> None:
    assert order_candidates([("a", 0), ("b", 0)], random.Random(0)) == ["a", "b"]
    assert order_candidates([("a", 0), ("b", 1), ("c", 0)], random.Random(0)) == ["b", "a", "c"]


@pytest.mark.parametrize(("token", "brand"), [
    ("pm_card_visa", "visa"), ("pm_card_mastercard", "mastercard"),
    ("pm_card_amex", "amex"), ("pm_card_visa_debit", "visa"), ("pm_card_declined", "visa"),
    ("pm_card_elo", "elo"), ("pix_123", ""),
])
def test_payment_method_brand(token: str, brand: str) -> None:
    assert payment_method_brand(token) == brand


def test_a_rule_rejects_an_inverted_amount_range() -> None:
    with pytest.raises(IntegrityError):
        RoutingRule.objects.create(name="bad", min_amount=500, max_amount=100)


def test_a_target_must_name_a_registered_provider() -> None:
    target = RoutingTarget(rule=rule(), provider="stripe", position=0, weight=1)
    with pytest.raises(ValidationError):
        target.full_clean()
    RoutingTarget(rule=target.rule, provider="getnet", position=0, weight=1).full_clean()


def test_rules_are_editable_in_the_admin(admin_client: Any) -> None:
    rule(("cielo", 70), ("rede", 30))
    listing = admin_client.get("/admin/providers/routingrule/")
    assert listing.status_code == 200
    assert b"cielo (70), rede (30)" in listing.content
    added = admin_client.post("/admin/providers/routingrule/add/", {
        "name": "BRL to Getnet", "priority": 5, "is_active": "on", "currency": "BRL",
        "merchant_id": "", "payment_method_brand": "",
        "targets-TOTAL_FORMS": "1", "targets-INITIAL_FORMS": "0",
        "targets-0-provider": "getnet", "targets-0-position": "0", "targets-0-weight": "0",
    })
    assert added.status_code == 302
    assert routed(currency="brl") == ["getnet"]
    assert admin_client.get("/admin/providers/providerbreaker/").status_code == 200
