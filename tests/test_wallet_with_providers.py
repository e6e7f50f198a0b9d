"""Deposits and payouts through the three simulated providers over real HTTP: each finished by the
simulator's control call and picked up by the status lookup or by its signed webhook; failover
before anything happened; a lost answer resolved with the same key; statuses applied once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.models import JournalEntry
from ledger.selectors import balance_get
from ledger.verify import ledger_verify
from providers import registry
from providers.base import InboundEvent, MovementProvider
from tests.conftest import routing_rule
from tests.provider_notices import wait_until as _wait
from wallet import services
from wallet.models import Deposit, MovementAttempt, Payout
from webhooks.models import Event

PROVIDERS = ["cielo", "rede", "getnet"]


def _available(merchant, currency: str = "brl") -> int:
    rows = balance_get(merchant=merchant)["available"]
    return next((row["amount"] for row in rows if row["currency"] == currency), 0)


def _kinds(reference_id: str) -> list[str]:
    return list(JournalEntry.objects.filter(reference_id=reference_id).order_by("sequence")
                .values_list("kind", flat=True))


def _fund(simulator, merchant, code: str, amount: int) -> Deposit:
    """A deposit at the provider: pending until it confirms, then available."""
    deposit = services.deposit_create(merchant=merchant, amount=amount, currency="brl",
                                      method="pix")
    assert (deposit.status, deposit.provider) == ("pending", code)
    assert _available(merchant) == 0
    simulator.control.complete(code, "deposit", deposit.provider_reference)
    deposit = services.deposit_refresh(deposit_id=deposit.id)
    assert deposit.status == "succeeded"
    assert _available(merchant) == amount
    return deposit


def test_every_registered_adapter_implements_the_movement_port():
    for code in registry.registered_codes():
        assert isinstance(registry.get_provider(code), MovementProvider), code


@pytest.fixture
def manual(simulator):
    """Payouts and deposits finish only through the control call, not on a timer."""
    for code in PROVIDERS:
        simulator.control.configure(code, async_completion_ms=None)
    return simulator


@pytest.mark.django_db
@pytest.mark.parametrize("code", PROVIDERS)
def test_a_deposit_then_a_paid_payout_through_each_provider(manual, api, merchant, code):
    routing_rule(code)
    _fund(manual, merchant, code, 10_000)
    body = api.post("/payouts", {"amount": 4000, "currency": "brl",
                                 "destination": "ba_checking"}, key="po-1").json()
    assert (body["status"], body["provider"]) == ("in_transit", code)
    assert _available(merchant) == 6000
    payout = Payout.objects.get(pk=body["id"])
    [movement] = [m for m in manual.control.movements(code) if m["kind"] == "payout"]
    assert (movement["reference"], movement["order_id"], movement["amount"]) == (
        payout.provider_reference, payout.id, 4000)

    assert services.payout_refresh(payout_id=payout.id).status == "in_transit"
    manual.control.complete(code, "payout", payout.provider_reference, succeed=True)
    payout = services.payout_refresh(payout_id=payout.id)
    assert payout.status == "paid"
    assert _available(merchant) == 6000
    assert _kinds(payout.id) == ["payout_created", "payout_in_transit", "payout_paid"]
    exchange = str(payout.attempts.get().exchange)
    assert "request" in exchange and "response" in exchange
    for secret in ("dev-cielo-merchant-key", "Basic ", "Bearer "):
        assert secret not in exchange
    assert ledger_verify().ok


@pytest.mark.django_db
@pytest.mark.parametrize("code", PROVIDERS)
def test_a_payout_the_provider_fails_returns_the_funds(manual, merchant, code):
    routing_rule(code)
    _fund(manual, merchant, code, 10_000)
    payout = services.payout_create(merchant=merchant, amount=4000, currency="brl",
                                    destination="ba_checking")
    manual.control.complete(code, "payout", payout.provider_reference, succeed=False)
    payout = services.payout_refresh(payout_id=payout.id)
    assert payout.status == "failed"
    assert _available(merchant) == 10_000
    assert _kinds(payout.id) == ["payout_created", "payout_in_transit", "payout_failed"]


@pytest.mark.django_db
def test_a_deposit_the_provider_fails_adds_nothing(manual, merchant):
    routing_rule("rede")
    deposit = services.deposit_create(merchant=merchant, amount=500, currency="brl",
                                      method="boleto")
    manual.control.complete("rede", "deposit", deposit.provider_reference, succeed=False)
    assert services.deposit_refresh(deposit_id=deposit.id).status == "failed"
    assert _available(merchant) == 0
    assert _kinds(deposit.id) == []


def _payout_with_cielo_failing(manual, merchant, fault: str):
    """A 1,000 payout, funded at getnet, routed cielo then rede, with cielo's payouts failing by
    `fault` (a simulator rate set to 1.0)."""
    routing_rule("getnet")
    _fund(manual, merchant, "getnet", 10_000)
    routing_rule("cielo", "rede", priority=0)
    manual.control.configure("cielo", **{fault: 1.0}, fault_operations=["payout"])
    return services.payout_create(merchant=merchant, amount=1000, currency="brl",
                                  destination="ba_checking")


@pytest.mark.django_db
def test_a_503_before_anything_happened_fails_the_payout_over(manual, merchant):
    payout = _payout_with_cielo_failing(manual, merchant, "unavailable_rate")
    assert (payout.status, payout.provider) == ("in_transit", "rede")
    attempts = list(payout.attempts.order_by("created_at").values_list("provider", "status"))
    assert attempts == [("cielo", "declined"), ("rede", "accepted")]
    assert manual.control.movements("cielo") == []
    assert _kinds(payout.id) == ["payout_created", "payout_in_transit"]


@pytest.mark.django_db
def test_a_lost_answer_never_fails_over_and_the_same_key_resolves_it(manual, merchant):
    payout = _payout_with_cielo_failing(manual, merchant, "drop_rate")
    assert (payout.status, payout.provider, payout.provider_reference) == (
        "pending", "cielo", "")
    attempt = payout.attempts.get()
    assert attempt.status == "unknown"
    assert _available(merchant) == 9000  # still reserved: it may have happened

    manual.control.configure("cielo", drop_rate=0.0)
    payout = services.payout_refresh(payout_id=payout.id)
    assert payout.status == "in_transit"
    assert payout.attempts.get().pk == attempt.pk  # the same attempt, the same key
    assert len([m for m in manual.control.movements("cielo") if m["kind"] == "payout"]) == 1
    assert manual.control.movements("rede") == []


# -- provider webhooks -----------------------------------------------------------------------
def _event(payout_or_deposit, type: str, *, event_id: str, reference: str | None = None
           ) -> InboundEvent:
    return InboundEvent(
        provider=payout_or_deposit.provider, event_id=event_id, type=type,
        occurred_at=datetime.now(UTC),
        provider_reference=payout_or_deposit.provider_reference if reference is None
        else reference, merchant_reference=payout_or_deposit.id)


@pytest.mark.django_db
def test_payout_statuses_apply_once_and_never_move_backwards(manual, merchant):
    routing_rule("cielo")
    _fund(manual, merchant, "cielo", 10_000)
    payout = services.payout_create(merchant=merchant, amount=1000, currency="brl",
                                    destination="ba_checking")
    paid = _event(payout, "payout.paid", event_id="e1")
    assert services.movement_provider_event_apply(event=paid) == "applied"
    assert services.movement_provider_event_apply(event=paid) == "applied"  # a duplicate
    late = _event(payout, "payout.failed", event_id="e2")
    assert services.movement_provider_event_apply(event=late) == "applied"
    payout = Payout.objects.get(pk=payout.pk)
    assert payout.status == "paid"
    assert _kinds(payout.id) == ["payout_created", "payout_in_transit", "payout_paid"]
    assert Event.objects.filter(object_id=payout.id, type="payout.paid").count() == 1
    assert _available(merchant) == 9000
    stranger = _event(payout, "payout.paid", event_id="e3", reference="nope")
    stranger = InboundEvent(**{**stranger.__dict__, "merchant_reference": "po_nope"})
    assert services.movement_provider_event_apply(event=stranger) == "ignored"


@pytest.mark.django_db
def test_a_paid_webhook_for_a_payout_whose_answer_was_lost_passes_through_in_transit(
        manual, merchant):
    routing_rule("rede")
    _fund(manual, merchant, "rede", 10_000)
    manual.control.configure("rede", drop_rate=1.0, fault_operations=["payout"])
    payout = services.payout_create(merchant=merchant, amount=1000, currency="brl",
                                    destination="ba_checking")
    assert (payout.status, payout.provider_reference) == ("pending", "")
    [movement] = [m for m in manual.control.movements("rede") if m["kind"] == "payout"]
    event = _event(payout, "payout.paid", event_id="e1", reference=movement["reference"])
    assert services.movement_provider_event_apply(event=event) == "applied"
    payout = Payout.objects.get(pk=payout.pk)
    assert (payout.status, payout.provider_reference) == ("paid", movement["reference"])
    assert payout.attempts.get().status == "accepted"
    assert list(Event.objects.filter(object_id=payout.id).order_by("created_at", "id")
                .values_list("type", flat=True)) == [
        "payout.created", "payout.in_transit", "payout.paid"]
    # One entry straight from reserved: it never sat in payouts_in_transit.
    assert _kinds(payout.id) == ["payout_created", "payout_paid"]
    assert _available(merchant) == 9000
    # The janitor finds nothing left to do, and the lost reply can no longer change anything.
    assert services.payout_refresh(payout_id=payout.id).status == "paid"
    assert ledger_verify().ok


@pytest.mark.django_db
def test_deposit_statuses_apply_once(manual, merchant):
    routing_rule("getnet")
    deposit = services.deposit_create(merchant=merchant, amount=700, currency="brl",
                                      method="pix")
    confirmed = _event(deposit, "deposit.confirmed", event_id="d1")
    assert services.movement_provider_event_apply(event=confirmed) == "applied"
    assert services.movement_provider_event_apply(event=confirmed) == "applied"
    failed = _event(deposit, "deposit.failed", event_id="d2")
    assert services.movement_provider_event_apply(event=failed) == "applied"
    assert Deposit.objects.get(pk=deposit.pk).status == "succeeded"
    assert _kinds(deposit.id) == ["deposit_confirmed"]
    assert _available(merchant) == 700
    assert MovementAttempt.objects.get(deposit=deposit).status == "accepted"




@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("code", PROVIDERS)
def test_signed_webhooks_finish_deposits_and_payouts(manual, live_server, settings,
                                                     run_tasks_inline, merchant, code):
    """Simulator → Clearhouse's inbound endpoint → inbox → wallet services, over real HTTP."""
    manual.control.configure(code, webhook_url=f"{live_server.url}/webhooks/providers/{code}/",
                             webhook_secret=settings.PROVIDERS[code]["webhook_secret"],
                             webhook_duplicate_rate=1.0, webhook_duplicates=2)
    routing_rule(code)
    deposit = services.deposit_create(merchant=merchant, amount=5000, currency="brl",
                                      method="pix")
    manual.control.complete(code, "deposit", deposit.provider_reference)
    _wait(lambda: Deposit.objects.get(pk=deposit.pk).status == "succeeded")
    payout = services.payout_create(merchant=merchant, amount=2000, currency="brl",
                                    destination="ba_checking")
    manual.control.complete(code, "payout", payout.provider_reference, succeed=False)
    _wait(lambda: Payout.objects.get(pk=payout.pk).status == "failed")
    assert _available(merchant) == 5000
    assert Event.objects.filter(object_id=payout.id, type="payout.failed").count() == 1
    assert _kinds(payout.id) == ["payout_created", "payout_in_transit", "payout_failed"]
    assert ledger_verify().ok
