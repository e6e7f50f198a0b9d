"""Payments through the three simulated providers over real HTTP: each wire format end to end,
failover before a charge, no failover after an unknown outcome, and no double charge."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from payments import services
from payments.models import Payment, PaymentAttempt
from providers.base import ProviderStatus
from tests.conftest import routing_rule
from tests.factories import pay

PROVIDERS = ["cielo", "rede", "getnet"]


def _pay(merchant, amount=1050, card="pm_card_visa", manual=False, currency="brl"):
    return pay(merchant, amount=amount, card=card, currency=currency,
               capture_method="manual" if manual else "automatic")


@pytest.mark.django_db
@pytest.mark.parametrize("code", PROVIDERS)
def test_authorize_capture_refund_through_each_provider(simulator, merchant, code):
    routing_rule(code)
    payment = _pay(merchant, 5000, manual=True)
    assert payment.status == "authorized"
    assert payment.provider == code
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=4000)
    refund = services.refund_create(merchant=merchant, payment_id=payment.id, amount=1500)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured, payment.amount_refunded) == (
        "captured", 4000, 1500)
    assert refund.status == "succeeded"
    kinds = list(payment.attempts.order_by("created_at").values_list("kind", "status"))
    assert kinds == [("authorize", "approved"), ("capture", "approved"),
                     ("refund", "approved")]
    exchange = str(payment.attempts.filter(kind="authorize").get().exchange)
    assert "request" in exchange and "response" in exchange
    for secret in ("dev-cielo-merchant-key", "Basic ", "Bearer "):
        assert secret not in exchange
    assert len(simulator.control.charges(provider=code, order_id=payment.id)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("code", PROVIDERS)
def test_a_decline_fails_the_payment_with_the_normalised_code(simulator, merchant, code):
    routing_rule(code)
    payment = _pay(merchant, card="pm_card_insufficient_funds")
    assert payment.status == "failed"
    assert payment.failure_code == "insufficient_funds"
    assert payment.attempts.count() == 1


@pytest.mark.django_db
def test_a_503_before_charging_fails_over_to_the_next_provider(simulator, merchant):
    routing_rule("cielo", "rede")
    simulator.control.configure("cielo", unavailable_rate=1.0)
    payment = _pay(merchant)
    assert payment.status == "captured"
    assert payment.provider == "rede"
    attempts = list(payment.attempts.order_by("created_at").values_list("provider", "status"))
    assert attempts == [("cielo", "declined"), ("rede", "approved")]
    assert simulator.control.charges(provider="cielo") == []
    assert len(simulator.control.charges(provider="rede", order_id=payment.id)) == 1


@pytest.mark.django_db
def test_charge_then_drop_never_fails_over_and_the_lookup_finds_one_capture(simulator, merchant):
    routing_rule("getnet", "rede")
    payment = _pay(merchant, card="pm_card_drop")
    assert payment.status == "authorization_requested"
    attempt = payment.attempts.get()
    assert (attempt.provider, attempt.status) == ("getnet", "unknown")
    # Running the task again (a redelivery) sends nothing.
    services.payment_authorization_execute(attempt_id=attempt.id)
    assert PaymentAttempt.objects.filter(payment=payment).count() == 1
    payment, said = services.payment_authorization_lookup(attempt_id=attempt.id)
    assert said == ProviderStatus.CAPTURED
    assert payment.status == "captured"
    assert len(simulator.control.charges(order_id=payment.id)) == 1
    assert payment.provider_reference


@pytest.mark.django_db
def test_every_provider_open_fails_the_payment_with_provider_unavailable(simulator, merchant,
                                                                        settings):
    from providers.breaker import breaker_record_failure

    settings.DEFAULT_PROVIDER = "cielo"
    routing_rule("cielo")
    for _ in range(settings.PROVIDER_BREAKER.get("failure_threshold", 5) + 1):
        breaker_record_failure("cielo")
    payment = services.payment_create(merchant=merchant, amount=100, currency="brl",
                                      payment_method="pm_card_visa", confirm=True)
    payment.refresh_from_db()
    assert payment.status == "failed"
    assert payment.failure_code == "provider_unavailable"


@pytest.mark.django_db(transaction=True)
def test_200_concurrent_payments_with_spikes_and_unknowns_are_never_charged_twice(
    simulator, merchant
):
    routing_rule(("cielo", 40), ("rede", 30), ("getnet", 30))
    for code in PROVIDERS:
        simulator.control.configure(code, spike_rate=0.2, spike_ms=300, drop_rate=0.05)

    def pay(i: int) -> str:
        try:
            return _pay(merchant, 1000 + i).id
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(pay, range(200)))
    assert simulator.control.double_charged() == []
    statuses = dict(Payment.objects.filter(pk__in=ids).values_list("id", "status"))
    assert set(statuses.values()) <= {"captured", "failed", "authorization_requested"}
    waiting = [pid for pid, status in statuses.items() if status == "authorization_requested"]
    for pid in waiting:  # awaiting reconciliation: exactly one unknown attempt, none in flight
        assert list(PaymentAttempt.objects.filter(payment_id=pid)
                    .values_list("status", flat=True)) == ["unknown"]
    for pid, status in statuses.items():
        charges = simulator.control.charges(order_id=pid)
        assert len(charges) <= 1
        if status == "captured":
            assert len(charges) == 1
