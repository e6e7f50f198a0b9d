"""Defects the convergence model (test_convergence_model.py) found, each as the smallest sequence
that shows it, on the model's in-memory provider. A defect is `xfail(strict=True)` while it is
open and the model skips exactly that scenario with a comment pointing here; once fixed, its
test stays here as a plain regression test (these three: fixed in 2dc390b)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import TestCase
from django.utils import timezone

from core.errors import ProviderError
from payments import services as payments
from payments.models import Payment
from reconciliation.janitor import janitor_run
from reconciliation.models import ReconciliationBreak
from tests.factories import MerchantFactory
from tests.test_convergence_model import QUEUE, Bank, World, _sign, model_providers  # noqa: F401
from webhooks import inbound
from webhooks.models import ProviderEvent


@pytest.fixture
def bank(model_providers, time_machine):  # noqa: F811
    time_machine.move_to(timezone.now(), tick=True)
    World.bank = Bank()
    QUEUE.clear()
    yield World.bank
    QUEUE.clear()


def _pay(bank: Bank, *, amount: int = 1000, manual: bool = False, plan: str = "approve"
         ) -> Payment:
    merchant = MerchantFactory()
    with TestCase.captureOnCommitCallbacks(execute=True):
        payment = payments.payment_create(
            merchant=merchant, amount=amount, currency="usd", payment_method="pm_card_visa",
            capture_method="manual" if manual else "automatic", confirm=True)
    bank.plans[("model_a", payment.id)] = plan
    with TestCase.captureOnCommitCallbacks(execute=True):
        payments.payment_authorization_execute(attempt_id=QUEUE.pop())
    payment.refresh_from_db()
    return payment


def _webhooks(bank: Bank, type: str) -> list[int]:
    """Deliver the provider's webhooks of `type` to the inbox and process them."""
    ids = []
    for event in [e for e in bank.outbox if e["type"] == type]:
        body = json.dumps(event).encode()
        with TestCase.captureOnCommitCallbacks(execute=True):
            received = inbound.provider_event_receive(
                provider=event["provider"], headers={"Model-Signature": _sign(body)},
                body=body)
            inbound.provider_event_process(event_id=received.event_id)
        ids.append(received.event_id)
    return ids


def _janitor_until(time_machine, *waits: timedelta) -> None:
    for wait in waits:
        time_machine.shift(wait)
        with TestCase.captureOnCommitCallbacks(execute=True):
            janitor_run(time_budget=None)
            inbound.provider_events_sweep()


def _open_breaks(payment: Payment) -> list[tuple[str, str]]:
    return list(ReconciliationBreak.objects.filter(status="open").filter(
        payment_id=payment.id).values_list("type", "key"))


@pytest.mark.django_db
def test_a_refund_the_janitor_resolved_is_the_one_its_webhook_reports_later(bank, time_machine):
    """Was: the janitor settles a refund whose answer was lost from the charge lookup, which
    names no refund, so the refund kept no provider reference; its webhook then found neither
    the reference nor a pending attempt and recorded a second, external refund that did not
    fit (an amount_mismatch break): the end state depended on the path."""
    payment = _pay(bank)
    assert payment.status == "captured"
    bank.plans[("refund", payment.provider_reference)] = "lost"
    refund = payments.refund_create(merchant=payment.merchant, payment_id=payment.id)
    assert refund.status == "pending"

    _janitor_until(time_machine, timedelta(minutes=6))
    refund.refresh_from_db()
    assert refund.status == "succeeded"
    _webhooks(bank, "refund.succeeded")

    assert _open_breaks(payment) == []
    refund.refresh_from_db()
    provider_refund = next(iter(bank.charges[payment.provider_reference].refunds))
    assert refund.provider_reference == provider_refund


@pytest.mark.django_db
def test_a_lost_capture_is_recorded_when_the_provider_has_refunded_the_charge_since(
        bank, time_machine):
    """Was: payment_operation_lookup took only `captured` as proof of a capture, and a fully
    refunded charge answers `refunded`: the payment stayed authorized with an unknown capture
    (its refund and chargeback notices held) until a stuck_unresolved break."""
    payment = _pay(bank, manual=True)
    assert payment.status == "authorized"
    bank.plans[("capture", payment.provider_reference)] = "lost"
    with pytest.raises(ProviderError):
        payments.payment_capture(merchant=payment.merchant, payment_id=payment.id)
    charge = bank.charges[payment.provider_reference]
    charge.refunds["dashboard_refund"] = charge.captured  # made in the provider's dashboard

    _janitor_until(time_machine, timedelta(minutes=6))

    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 1000)


@pytest.mark.django_db
def test_a_chargeback_on_a_charge_in_a_break_does_not_stay_held_forever(bank, time_machine):
    """Was: a notice held for a payment that never moves (its authorization answer conflicts
    with ours, so a break holds it at authorization_requested) stayed `held` forever: the
    chargeback was neither recorded nor reported to staff."""
    payment = _pay(bank, plan="amount")  # the provider charged 999 for our 1000
    assert payment.status == "authorization_requested"
    assert [kind for kind, _ in _open_breaks(payment)] == ["amount_mismatch"]
    charge = bank.charges_of(payment.id)[0]
    charge.disputes["dp_1"] = [charge.captured, "open"]
    bank.emit("model_a", "dispute.opened", reference=charge.reference, order=payment.id,
              amount=charge.captured, currency="usd", dispute_reference="dp_1")
    (event_id,) = _webhooks(bank, "dispute.opened")

    _janitor_until(time_machine, timedelta(minutes=6), timedelta(hours=1), timedelta(days=6))

    event = ProviderEvent.objects.get(pk=event_id)
    assert event.status not in ("held", "pending")
    assert any("dp_1" in key or kind == "provider_conflict" for kind, key in
               _open_breaks(payment)) or payment.disputes.exists()
