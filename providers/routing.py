"""Routing: which providers to try for a payment, in order, from the `RoutingRule` data.

`route()` reads the first matching rule with a provider of the payment's mode (live or test:
they never mix), drops providers whose breaker is open, picks the first candidate by weight
(the volume split) and lists the rest as fallbacks. Callers try them in order, asking
`breaker_allow(code)` before each call, and move to the next only after a *retryable* failure
(one where the provider cannot have charged), never after UNKNOWN.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from django.conf import settings
from django.db.models import Q

from providers.breaker import breaker_skipped
from providers.models import RoutingTarget
from providers.registry import codes_of_mode

BRANDS = ("visa", "mastercard", "amex", "discover", "diners", "jcb", "unionpay", "elo",
          "hipercard")
_RNG = random.Random()


def payment_method_brand(payment_method: str) -> str:
    """`pm_card_mastercard_debit` → mastercard. The simulator's behaviour tokens
    (`pm_card_declined`, `pm_card_timeout`, …) are Visa test cards, as at Stripe."""
    if not payment_method.startswith("pm_card_"):
        return ""
    rest = payment_method.removeprefix("pm_card_")
    for brand in BRANDS:
        if rest == brand or rest.startswith(f"{brand}_"):
            return brand
    return "visa"


def order_candidates(targets: Sequence[tuple[str, int]], rng: random.Random) -> list[str]:
    """Weighted choice of the first provider among targets with weight > 0; every other target
    follows in its listed order. With no weights, the listed order as is."""
    weighted = [(code, weight) for code, weight in targets if weight > 0]
    if not weighted:
        return [code for code, _ in targets]
    first = rng.choices([code for code, _ in weighted],
                        weights=[weight for _, weight in weighted])[0]
    return [first, *[code for code, _ in targets if code != first]]


def matching_targets(*, merchant_id: str, currency: str, amount: int, payment_method: str,
                     providers: Sequence[str]) -> list[tuple[str, int]]:
    """(provider, weight) of the first active matching rule that has targets among `providers`,
    in their listed order; [] when none matches. One query: targets joined to their rules."""
    rows = (
        RoutingTarget.objects.filter(rule__is_active=True, provider__in=providers)
        .filter(Q(rule__merchant_id="") | Q(rule__merchant_id=merchant_id))
        .filter(Q(rule__currency="") | Q(rule__currency=currency.lower()))
        .filter(Q(rule__min_amount__isnull=True) | Q(rule__min_amount__lte=amount))
        .filter(Q(rule__max_amount__isnull=True) | Q(rule__max_amount__gte=amount))
        .filter(Q(rule__payment_method_brand="")
                | Q(rule__payment_method_brand=payment_method_brand(payment_method)))
        .order_by("rule__priority", "rule_id", "position", "id")
        .values_list("rule_id", "provider", "weight")
    )
    targets: list[tuple[str, int]] = []
    first_rule = None
    for rule_id, provider, weight in rows:
        if first_rule is not None and rule_id != first_rule:
            break
        first_rule = rule_id
        targets.append((provider, weight))
    return targets


def route(*, merchant_id: str, currency: str, amount: int, payment_method: str,
          livemode: bool, rng: random.Random | None = None) -> list[str]:
    """Provider codes of the payment's mode to try, best first.

    Live: the matching rule's live providers whose breaker lets them, else [] (the payment
    fails `provider_unavailable`; live money never falls back to a default). Test: with no
    matching rule the default test provider, and again when every candidate's breaker is open
    if its own breaker lets it, else []."""
    providers = codes_of_mode(livemode=livemode)
    targets = matching_targets(merchant_id=merchant_id, currency=currency, amount=amount,
                               payment_method=payment_method, providers=providers)
    default = None if livemode or settings.DEFAULT_PROVIDER not in providers else (
        settings.DEFAULT_PROVIDER)
    if not targets and default is not None:
        targets = [(default, 0)]
    fallback = {default} if default is not None else set()
    skipped = breaker_skipped({code for code, _ in targets} | fallback)
    candidates = order_candidates([t for t in targets if t[0] not in skipped], rng or _RNG)
    if not candidates and default is not None and default not in skipped:
        return [default]
    return candidates
