"""Live and test never mix: a live merchant's money never reaches the sandbox or the simulator,
a test merchant never reaches a live provider, and a key's mode is its merchant's mode."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction

from core.models import ApiKey, Merchant
from core.services import api_key_create
from payments import services
from payments.models import Payment, PaymentAttempt
from providers import registry
from providers.breaker import breaker_record_failure
from providers.models import SandboxCharge, SandboxMovement
from providers.routing import route
from tests.conftest import Api, assert_error, routing_rule
from tests.factories import merchant_with_key, pay
from wallet.models import Deposit, Payout

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _modes(settings: Any) -> None:
    """Every adapter enabled; Cielo is the one live provider (as production would say with
    PROVIDERS_LIVE=cielo); the sandbox stays the default test provider."""
    settings.DEFAULT_PROVIDER = "sandbox"
    settings.PROVIDERS_ENABLED = ["sandbox", "cielo", "rede", "getnet"]
    settings.PROVIDERS_LIVE = ["cielo"]
    settings.PROVIDER_BREAKER = {"failure_threshold": 2, "window_seconds": 60,
                                 "cooldown_seconds": 30, "probe_timeout_seconds": 30}


def routed(*, livemode: bool, currency: str = "brl") -> list[str]:
    return route(merchant_id="acct_1", currency=currency, amount=1000,
                 payment_method="pm_card_visa", livemode=livemode)


def _live_merchant() -> tuple[Merchant, str]:
    return merchant_with_key(is_live=True)


# -- routing ------------------------------------------------------------------------------------
def test_live_routing_with_no_matching_rule_is_empty_never_the_sandbox() -> None:
    assert routed(livemode=True) == []
    assert routed(livemode=False) == ["sandbox"]


def test_live_routing_only_returns_live_providers_and_test_routing_only_test_ones() -> None:
    routing_rule("sandbox", "rede", "cielo")
    assert routed(livemode=True) == ["cielo"]
    assert routed(livemode=False) == ["sandbox", "rede"]


def test_a_rule_with_no_provider_of_the_mode_is_skipped_for_the_next_one() -> None:
    routing_rule("sandbox", priority=1)
    routing_rule("cielo", priority=2)
    assert routed(livemode=True) == ["cielo"]
    assert routed(livemode=False) == ["sandbox"]


def test_every_live_breaker_open_routes_nowhere_rather_than_to_the_sandbox() -> None:
    routing_rule("cielo")
    breaker_record_failure("cielo")
    breaker_record_failure("cielo")
    assert routed(livemode=True) == []


def test_the_sandbox_is_test_only_even_when_listed_live(settings: Any) -> None:
    settings.PROVIDERS_LIVE = ["cielo", "sandbox"]
    routing_rule("sandbox", "cielo")
    assert routed(livemode=True) == ["cielo"]
    assert routed(livemode=False) == ["sandbox"]


def test_a_disabled_provider_is_never_routed_nor_reachable(settings: Any) -> None:
    settings.PROVIDERS_ENABLED = ["sandbox", "cielo"]
    routing_rule("rede", "sandbox")
    assert routed(livemode=False) == ["sandbox"]
    with pytest.raises(registry.UnknownProvider):
        registry.get_provider("rede")
    assert "rede" not in registry.registered_codes()


def test_a_live_merchant_routes_by_its_own_mode_in_the_test_suite_defaults(settings: Any) -> None:
    """Development and test settings enable every adapter, all of them test (the simulator)."""
    settings.PROVIDERS_LIVE = []
    routing_rule("cielo", "rede", "getnet")
    assert routed(livemode=True) == []
    assert routed(livemode=False) == ["cielo", "rede", "getnet"]


# -- payments and wallet movements ---------------------------------------------------------------
def test_a_live_payment_with_no_live_provider_fails_provider_unavailable(
        django_capture_on_commit_callbacks: Any) -> None:
    merchant, _ = _live_merchant()
    payment = pay(merchant, amount=1000, currency="usd", card="pm_card_visa")
    assert (payment.status, payment.failure_code) == ("failed", "provider_unavailable")
    assert payment.failure_message.startswith("No live provider can take this payment")
    assert payment.provider == ""
    assert not PaymentAttempt.objects.filter(payment=payment).exists()
    assert not SandboxCharge.objects.exists()


def test_a_live_payment_whose_live_breakers_are_open_fails_and_never_reaches_the_sandbox(
        ) -> None:
    _, raw_key = _live_merchant()
    routing_rule("cielo", "sandbox")
    breaker_record_failure("cielo")
    breaker_record_failure("cielo")
    response = Api(raw_key).post("/payments", {"amount": 1000, "currency": "brl",
                                               "payment_method": "pm_card_visa",
                                               "confirm": True}, key="live-1")
    body = response.json()
    assert body["livemode"] is True
    assert (body["status"], body["last_error"]["code"]) == ("failed", "provider_unavailable")
    assert not PaymentAttempt.objects.filter(payment_id=body["id"]).exists()
    assert not SandboxCharge.objects.exists()


@pytest.mark.parametrize("path, body, model", [
    ("/deposits", {"amount": 5_000_000, "currency": "usd", "method": "pix"}, Deposit),
    ("/payouts", {"amount": 100, "currency": "usd", "destination": "ba_123"}, Payout),
], ids=["deposit", "payout"])
def test_a_live_movement_with_no_live_provider_is_refused_provider_unavailable(
        path, body, model) -> None:
    _, raw_key = _live_merchant()
    response = Api(raw_key).post(path, body, key="live-movement-1")
    error = assert_error(response, 502, code="provider_unavailable")
    assert f"No live {path.strip('/').removesuffix('s')} provider" in error["message"]
    assert not model.objects.exists()
    assert not SandboxMovement.objects.exists()


def test_a_test_merchant_never_reaches_a_live_provider(
        django_capture_on_commit_callbacks: Any) -> None:
    merchant, _ = merchant_with_key()
    routing_rule("cielo")
    payment = pay(merchant, amount=1000, currency="brl", card="pm_card_visa")
    assert payment.status == "captured"
    assert payment.provider == "sandbox"
    assert list(payment.attempts.values_list("provider", flat=True)) == ["sandbox"]


def test_a_test_merchant_deposit_goes_to_the_sandbox_not_the_live_provider() -> None:
    _, raw_key = merchant_with_key()
    routing_rule("cielo")
    response = Api(raw_key).post("/deposits", {"amount": 700, "currency": "brl",
                                               "method": "pix"}, key="dep-test-1")
    assert response.status_code == 200, response.json()
    assert Deposit.objects.get().provider == "sandbox"


# -- a key's mode is its merchant's mode, in PostgreSQL ------------------------------------------
def test_a_key_whose_mode_differs_from_its_merchants_is_refused_by_the_database() -> None:
    merchant, _ = merchant_with_key()
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.create(merchant=merchant, prefix="sk_live_xxxx", hashed_key="0" * 64,
                              is_live=True)
    key = merchant.api_keys.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        ApiKey.objects.filter(pk=key.pk).update(is_live=True)


def test_a_merchants_mode_never_changes() -> None:
    merchant, _ = merchant_with_key()
    with pytest.raises(IntegrityError), transaction.atomic():
        Merchant.objects.filter(pk=merchant.pk).update(is_live=True)
    Merchant.objects.filter(pk=merchant.pk).update(name="Renamed")  # other fields stay editable


def test_keys_issued_for_a_live_merchant_are_live() -> None:
    merchant, raw_key = _live_merchant()
    assert raw_key.startswith("sk_live_")
    issued = api_key_create(merchant=merchant)
    assert ApiKey.objects.get(pk=issued.api_key.pk).is_live


# -- a live merchant's money never reaches the sandbox, in PostgreSQL ---------------------------
_GUARD = "never reaches the sandbox"


def _refused(sql: str, params: list[Any]) -> None:
    from django.db import connection

    with pytest.raises(IntegrityError, match=_GUARD), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute(sql, params)


_ATTEMPT_COLUMNS = ("id, kind, provider, amount, status, provider_reference, error_code, "
                    "error_message, exchange, created_at")


def test_a_live_merchants_payment_or_movement_can_never_be_at_the_sandbox() -> None:
    """Routing keeps live money off the sandbox; the database holds it for raw SQL and any other
    code path too: no payment, deposit or payout of a live merchant names it, and no attempt of
    one is ever opened there."""
    merchant, _ = _live_merchant()
    payment = services.payment_create(merchant=merchant, amount=1000, currency="brl",
                                      payment_method="pm_card_visa")
    deposit = Deposit.objects.create(merchant=merchant, amount=700, currency="brl",
                                     method="pix", provider="cielo")
    for table, row in (("payments_payment", payment), ("wallet_deposit", deposit)):
        _refused(f"UPDATE {table} SET provider = 'sandbox' WHERE id = %s", [row.pk])
        with pytest.raises(IntegrityError, match=_GUARD), transaction.atomic():
            type(row).objects.filter(pk=row.pk).update(provider="sandbox")
    _refused(f"INSERT INTO payments_paymentattempt ({_ATTEMPT_COLUMNS}, payment_id) "
             "VALUES ('att_raw', 'authorize', 'sandbox', 1000, 'requested', '', '', '', '{}', "
             "now(), %s)", [payment.pk])
    _refused(f"INSERT INTO wallet_movementattempt ({_ATTEMPT_COLUMNS}, deposit_id) "
             "VALUES ('mvat_raw', 'deposit', 'sandbox', 700, 'requested', '', '', '', '{}', "
             "now(), %s)", [deposit.pk])
    with pytest.raises(IntegrityError, match=_GUARD), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="authorize", provider="sandbox",
                                      amount=1000)
    with pytest.raises(IntegrityError, match=_GUARD), transaction.atomic():
        Deposit.objects.create(merchant=merchant, amount=700, currency="brl", method="pix",
                               provider="sandbox")
    # A payout without its reserving ledger entry fails a deferred check at commit: roll back.
    with transaction.atomic():
        payout = Payout.objects.create(merchant=merchant, amount=100, currency="brl",
                                       destination="ba_123", provider="cielo")
        _refused("UPDATE wallet_payout SET provider = 'sandbox' WHERE id = %s", [payout.pk])
        with pytest.raises(IntegrityError, match=_GUARD), transaction.atomic():
            Payout.objects.filter(pk=payout.pk).update(provider="sandbox")
        _refused(f"INSERT INTO wallet_movementattempt ({_ATTEMPT_COLUMNS}, payout_id) "
                 "VALUES ('mvat_raw', 'payout', 'sandbox', 100, 'requested', '', '', '', '{}', "
                 "now(), %s)", [payout.pk])
        with pytest.raises(IntegrityError, match=_GUARD), transaction.atomic():
            Payout.objects.create(merchant=merchant, amount=100, currency="brl",
                                  destination="ba_123", provider="sandbox")
        transaction.set_rollback(True)
    # Its live providers, and a test merchant's sandbox, stay allowed.
    PaymentAttempt.objects.create(payment=payment, kind="authorize", provider="cielo",
                                  amount=1000)
    test_merchant, _ = merchant_with_key()
    test_payment = services.payment_create(merchant=test_merchant, amount=1000, currency="brl",
                                           payment_method="pm_card_visa")
    Payment.objects.filter(pk=test_payment.pk).update(provider="sandbox")
    PaymentAttempt.objects.create(payment=test_payment, kind="authorize", provider="sandbox",
                                  amount=1000)
    Deposit.objects.create(merchant=test_merchant, amount=700, currency="brl", method="pix",
                           provider="sandbox")
