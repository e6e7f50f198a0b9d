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
from django.db import connection

from providers.breaker import breakers_skipped_among
from providers.models import BreakerState, ProviderBreaker
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


# Everything routing reads, in one statement: the targets of the active rules that match the
# payment (part 0, best rule first; the same conditions as the RoutingRule docstring), and the
# breakers of the mode's providers that are not closed (part 1). Two ORM queries cost two round
# trips, and building the targets query took longer than running it.
_ROUTING_SQL = """
    SELECT 0 AS part, r.priority, t.rule_id, t.position, t.id, t.provider, t.weight,
           NULL AS state, NULL AS opened_at, NULL AS probe_started_at
      FROM providers_routingtarget t JOIN providers_routingrule r ON r.id = t.rule_id
     WHERE r.is_active AND t.provider = ANY(%(providers)s)
       AND r.merchant_id IN ('', %(merchant_id)s) AND r.currency IN ('', %(currency)s)
       AND (r.min_amount IS NULL OR r.min_amount <= %(amount)s)
       AND (r.max_amount IS NULL OR r.max_amount >= %(amount)s)
       AND r.payment_method_brand IN ('', %(brand)s)
    UNION ALL
    SELECT 1, NULL, NULL, NULL, NULL, b.provider, NULL, b.state, b.opened_at, b.probe_started_at
      FROM providers_providerbreaker b
     WHERE b.provider = ANY(%(providers)s) AND b.state <> %(closed)s
     ORDER BY 1, 2, 3, 4, 5
"""


def _routing_read(*, merchant_id: str, currency: str, amount: int, payment_method: str,
                  providers: Sequence[str]) -> tuple[list[tuple[str, int]], set[str]]:
    """(provider, weight) of the first active matching rule that has targets among `providers`,
    in their listed order ([] when none matches), and which of `providers` their breakers
    leave out now."""
    with connection.cursor() as cursor:
        cursor.execute(_ROUTING_SQL, {
            "providers": list(providers), "merchant_id": merchant_id,
            "currency": currency.lower(), "amount": amount,
            "brand": payment_method_brand(payment_method), "closed": BreakerState.CLOSED,
        })
        rows = cursor.fetchall()
    targets: list[tuple[str, int]] = []
    breakers: list[ProviderBreaker] = []
    first_rule = None
    for part, _, rule_id, _, _, provider, weight, state, opened_at, probe_started_at in rows:
        if part == 1:
            breakers.append(ProviderBreaker(provider=provider, state=state, opened_at=opened_at,
                                            probe_started_at=probe_started_at))
        elif first_rule is None or rule_id == first_rule:
            first_rule = rule_id
            targets.append((provider, weight))
    return targets, breakers_skipped_among(breakers)


def route(*, merchant_id: str, currency: str, amount: int, payment_method: str,
          livemode: bool, rng: random.Random | None = None) -> list[str]:
    """Provider codes of the payment's mode to try, best first.

    Live: the matching rule's live providers whose breaker lets them, else [] (the payment
    fails `provider_unavailable`; live money never falls back to a default). Test: with no
    matching rule the default test provider, and again when every candidate's breaker is open
    if its own breaker lets it, else []."""
    providers = codes_of_mode(livemode=livemode)
    if not providers:
        return []
    targets, skipped = _routing_read(merchant_id=merchant_id, currency=currency, amount=amount,
                                     payment_method=payment_method, providers=providers)
    default = None if livemode or settings.DEFAULT_PROVIDER not in providers else (
        settings.DEFAULT_PROVIDER)
    if not targets and default is not None:
        targets = [(default, 0)]
    candidates = order_candidates([t for t in targets if t[0] not in skipped], rng or _RNG)
    if not candidates and default is not None and default not in skipped:
        return [default]
    return candidates
