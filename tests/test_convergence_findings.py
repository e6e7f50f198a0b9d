"""Defects the convergence model (test_convergence_model.py) found, each as the smallest sequence
that shows it, on the model's in-memory provider. A defect is `xfail(strict=True)` while it is
open and the model skips exactly that scenario with a comment pointing here; once fixed, its
test stays here as a plain regression test (the first three: fixed in 2dc390b; the 3-D Secure
ones: fixed in 24e03ea, 6aa97cb and 55ad91a; the expiry ones in the commit after 7ab2c3c)."""

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


@pytest.mark.django_db
def test_a_challenge_passed_after_the_janitor_failed_it_leaves_no_charge_unexplained(
        bank, time_machine):
    """Was (found by the model's 3-D Secure rules): the janitor failed an abandoned challenge
    (`authentication_abandoned`) while it was still open at the provider; the customer passed
    it just after, its notice never came and the customer never came back to us. A manual
    capture leaves no settlement line, so no path told us: the provider held an authorization
    on a payment we call failed, with no break. The janitor now voids the challenge at the
    provider before failing the payment, so there is nothing left to pass."""
    payment = _pay(bank, manual=True, plan="challenge")
    assert payment.status == "requires_action"
    charge = bank.charges[payment.provider_reference]

    _janitor_until(time_machine, payment.action_expires_at - timezone.now()
                   + timedelta(minutes=1))
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")
    bank.challenge_end(charge, approved=True)  # the customer, late; its notice is lost
    _janitor_until(time_machine, timedelta(minutes=6), timedelta(hours=1), timedelta(days=6))

    payment.refresh_from_db()
    assert payment.status == "failed"
    assert charge.status not in ("authorized", "captured") or _open_breaks(payment), (
        f"the provider holds {charge.status} {charge.amount} for {payment.id}, failed here, "
        "and no break says so")


def _void_of_challenge_lost(bank: Bank, time_machine) -> tuple[Payment, object]:
    """A challenged payment past its deadline: the janitor's void ends the challenge at the
    provider, but its answer is lost (the void attempt is unknown, the payment requires_action)."""
    payment = _pay(bank, plan="challenge")
    assert payment.status == "requires_action"
    bank.plans[("void", payment.provider_reference)] = "lost"
    _janitor_until(time_machine, payment.action_expires_at - timezone.now()
                   + timedelta(minutes=1))
    payment.refresh_from_db()
    void = payment.attempts.get(kind="void")
    assert (payment.status, void.status) == ("requires_action", "unknown")
    assert bank.charges[payment.provider_reference].status == "voided"
    return payment, void


@pytest.mark.django_db
def test_a_lost_void_of_an_abandoned_challenge_is_answered_when_the_customer_returns_first(
        bank, time_machine):
    """Was (found by the model on 24e03ea): the janitor voided an abandoned challenge but the
    void's answer was lost, so the payment stayed requires_action for the void to be re-sent.
    The customer came back first: our return asked the provider, which said `voided`, and the
    lookup failed the payment `card_declined` (the customer was not declined: we voided it);
    the janitor re-sends voids of payments still requires_action only, so the VOID attempt
    stayed unknown for good, with no break. Fixed in 6aa97cb (found independently there)."""
    payment, void = _void_of_challenge_lost(bank, time_machine)
    attempt = payment.attempts.get(kind="authorize")
    with TestCase.captureOnCommitCallbacks(execute=True):
        payments.payment_authentication_return(
            attempt_id=attempt.id, token=payments.authentication_token(attempt.id))

    _janitor_until(time_machine, timedelta(minutes=6), timedelta(hours=1), timedelta(days=6))

    payment.refresh_from_db()
    void.refresh_from_db()
    assert payment.status == "failed"
    assert void.status != "unknown", "the void of the challenge was never answered"
    assert payment.failure_code == "authentication_abandoned"


@pytest.mark.django_db
def test_a_void_of_an_abandoned_challenge_refused_while_the_provider_is_down_is_sent_again(
        bank, time_machine):
    """Was (found by the model on 768c1a4): the janitor's void of an abandoned challenge met
    the provider down for a moment (a retryable refusal: nothing happened there). The void
    attempt was declined, and every later run took it as the provider's refusal of a challenge
    it still showed open: a break, and no void again; the payment never ended, and the
    challenge stayed open at the provider for a customer to pass. Fixed in 55ad91a."""
    payment = _pay(bank, plan="challenge")
    assert payment.status == "requires_action"
    bank.plans[("void", payment.provider_reference)] = "unavailable"  # the first void only

    _janitor_until(time_machine, payment.action_expires_at - timezone.now()
                   + timedelta(minutes=1), timedelta(minutes=6), timedelta(hours=1))

    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")
    assert bank.charges[payment.provider_reference].status == "voided"


@pytest.mark.django_db
def test_an_authorization_the_provider_let_lapse_before_our_expiry_void_is_not_left_authorized(
        bank, time_machine):
    """The janitor did not run between our expiry and the provider's (an outage, a backlog):
    the provider shows the charge voided, its void answers invalid_state. The payment must end
    canceled (expired) with nothing held, or a break must say why it does not."""
    payment = _pay(bank, manual=True)
    assert payment.status == "authorized"

    _janitor_until(time_machine, timedelta(days=6))  # past both validities (1 day, +2 hours)

    payment.refresh_from_db()
    charge = bank.charges[payment.provider_reference]
    assert (charge.status, charge.lapsed) == ("voided", True)
    assert (payment.status, payment.cancellation_reason) == ("canceled", "expired"), (
        f"{payment.id} is {payment.status} holding {payment.amount_authorized}, the provider "
        f"let it lapse")
    void = payment.attempts.filter(kind="void").latest("created_at")
    assert void.status == "approved"  # recorded from the lookup that showed it lapsed


@pytest.mark.django_db
def test_an_expired_authorization_whose_earlier_cancel_was_refused_is_not_held_forever(
        bank, time_machine):
    """The merchant's cancel met the provider down (a retryable refusal: nothing done there);
    the payment stays authorized, as it should. Once its authorization expires, the janitor's
    expiry job must still void it (or a break must say why not)."""
    payment = _pay(bank, manual=True)
    bank.plans[("void", payment.provider_reference)] = "unavailable"
    with pytest.raises(ProviderError):
        payments.payment_cancel(merchant=payment.merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.status == "authorized"

    _janitor_until(time_machine, timedelta(days=1, minutes=1))  # ours expired, the provider's not

    payment.refresh_from_db()
    charge = bank.charges[payment.provider_reference]
    assert (payment.status, charge.status) == ("canceled", "voided"), (
        f"{payment.id} is {payment.status} past its expiry, the provider {charge.status}")
    assert not _open_breaks(payment)
