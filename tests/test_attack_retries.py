"""Attacks on off-session payments and delayed retries of soft declines: a provider that
redelivers, reorders or contradicts its notices and lookups, and a hostile API client. Each
test is either a hole found and fixed or an attack that held."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from django.core.checks import run_checks
from django.db import IntegrityError, transaction

from backoffice import services as backoffice
from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment
from providers.base import Outcome, ProviderStatus
from reconciliation import jobs
from reconciliation.models import ReconciliationBreak as Break
from tests.conftest import assert_error, routing_rule
from tests.test_decline_rules import T0, _actor
from tests.test_saved_payment_methods import charge, save_card, tokenize
from webhooks.models import Event

INSUFFICIENT_FUNDS = "4000000000009995"


def _soft_declined(merchant, settings, delays=(60,)) -> Payment:
    """An off-session charge of a saved card declined as insufficient funds at cielo, its
    retry scheduled."""
    settings.PAYMENT_RETRY_DELAYS = list(delays)
    routing_rule("cielo")
    method = services.payment_method_create(merchant=merchant, provider="cielo",
                                            token=tokenize("cielo", INSUFFICIENT_FUNDS))
    payment = charge(merchant, method.id, off_session=True)
    assert payment.next_retry_at is not None
    return payment


def _retry(payment: Payment, django_capture_on_commit_callbacks) -> Payment:
    with django_capture_on_commit_callbacks(execute=True):
        assert services.payment_retries_run(now=payment.next_retry_at) == 1
    return Payment.objects.get(pk=payment.pk)


def _still_without_an_answer(payment: Payment, retry) -> None:
    """The retry (the first retry of the payment) still waits for its own answer."""
    retry.refresh_from_db()
    payment.refresh_from_db()
    assert retry.status == "unknown"
    assert (payment.status, payment.next_retry_at, payment.retry_count) == (
        "authorization_requested", None, 1)


@pytest.mark.django_db
def test_a_redelivered_decline_notice_of_the_first_try_does_not_answer_the_retry(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    """The retry's answer is lost; the provider then redelivers its notice of the first try's
    decline (naming that charge's reference). Taken as the retry's answer it would schedule a
    third try while the retry may have taken the money."""
    payment = _soft_declined(merchant, settings, delays=(60, 120))
    first = payment.attempts.get()
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["authorize"])
    payment = _retry(payment, django_capture_on_commit_callbacks)
    retry = payment.attempts.order_by("-created_at").first()
    assert retry.status == "unknown" and retry.pk != first.pk

    services.payment_provider_event_apply(
        provider="cielo", type="payment.declined", provider_reference=first.provider_reference,
        merchant_reference=payment.id, error_code="insufficient_funds")

    _still_without_an_answer(payment, retry)


@pytest.mark.django_db
def test_a_late_approval_of_the_declined_try_stops_its_retry(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    """The provider's notice says the declined first try was approved after all (it changed its
    mind, or lies). Sending the retry would charge the customer a second time: it is not sent,
    and a person gets a break with both sides."""
    payment = _soft_declined(merchant, settings)
    first = payment.attempts.get()
    services.payment_provider_event_apply(
        provider="cielo", type="payment.authorized", provider_reference=first.provider_reference,
        merchant_reference=payment.id, amount=payment.amount, currency="brl")

    with django_capture_on_commit_callbacks(execute=True):
        services.payment_retries_run(now=payment.next_retry_at)
    payment.refresh_from_db()
    assert payment.attempts.count() == 1
    assert len(simulator.control.charges(order_id=payment.id)) == 1
    assert payment.next_retry_at is None
    assert Break.objects.filter(payment_id=payment.id, type="status_mismatch").count() == 1


@pytest.mark.django_db
def test_a_lookup_answering_with_the_first_try_s_charge_does_not_answer_the_retry(
        simulator, merchant, settings, django_capture_on_commit_callbacks, monkeypatch):
    """The retry's answer is lost and the janitor asks by our order id (the payment's). A
    provider that lists the order's charges oldest first answers with the first try's declined
    charge: taken as the retry's answer, the retry (which may have taken the money) is recorded
    declined and a third try is scheduled."""
    payment = _soft_declined(merchant, settings, delays=(60, 120))
    first = payment.attempts.get()
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["authorize"])
    payment = _retry(payment, django_capture_on_commit_callbacks)
    retry = payment.attempts.order_by("-created_at").first()
    assert retry.status == "unknown" and not retry.provider_reference
    simulator.control.configure("cielo", drop_rate=0.0)

    real_call = services.provider_call

    def oldest_first(code, operation, request, **kwargs):
        if operation == "retrieve" and not request.provider_reference:
            request = replace(request, provider_reference=first.provider_reference)
        return real_call(code, operation, request, **kwargs)

    monkeypatch.setattr(services, "provider_call", oldest_first)
    services.payment_authorization_lookup(attempt_id=retry.id)

    _still_without_an_answer(payment, retry)


@pytest.mark.django_db
def test_a_retry_is_not_sent_once_its_decline_was_made_final(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    """An approved change makes cielo's insufficient_funds a hard decline (final) while a retry
    of one waits: the retry is not sent, the payment fails with its decline."""
    payment = _soft_declined(merchant, settings)
    approval = backoffice.decline_rule_change_request(
        actor=_actor("operator"), provider="cielo", code="insufficient_funds",
        meaning="hard_decline", note="Final for this merchant category")
    backoffice.approval_decide(actor=_actor("approver"), approval_id=approval.id, approve=True,
                               comment="Agreed")

    with django_capture_on_commit_callbacks(execute=True):
        assert services.payment_retries_run(now=payment.next_retry_at) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code, payment.next_retry_at) == (
        "failed", "insufficient_funds", None)
    assert payment.attempts.count() == 1
    assert len(simulator.control.charges(order_id=payment.id)) == 1


@pytest.mark.django_db
@pytest.mark.xfail(strict=True, reason=(
    "Open: the contract lets a merchant cancel only created or authorized payments, so an "
    "off-session payment waiting for its delayed retry (authorization_requested) cannot be "
    "stopped: the retry charges a customer who withdrew. Needs a contract change "
    "(authorization_requested -> canceled while a retry waits, no provider call) and the "
    "transitions trigger updated."))
def test_the_merchant_can_stop_a_payment_waiting_for_its_retry(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    payment = _soft_declined(merchant, settings)
    services.payment_cancel(merchant=merchant, payment_id=payment.id)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.payment_retries_run(now=payment.next_retry_at) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.next_retry_at) == ("canceled", None)
    assert len(simulator.control.charges(order_id=payment.id)) == 1


# -- attacks that held -----------------------------------------------------------------------
@pytest.mark.django_db
def test_the_database_bounds_retries_and_keeps_them_off_session_and_waiting(
        simulator, merchant, settings):
    payment = _soft_declined(merchant, settings)
    with pytest.raises(IntegrityError, match="payment_retries_bounded"), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(retry_count=9)
    with pytest.raises(IntegrityError, match="never change"), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(off_session=False)
    on_session = charge(merchant, save_card(merchant, "cielo").id)
    with pytest.raises(IntegrityError, match="payment_retry_only_while_waiting"), \
            transaction.atomic():
        Payment.objects.filter(pk=on_session.pk).update(next_retry_at=payment.next_retry_at)


@pytest.mark.django_db
def test_two_janitors_at_a_due_retry_send_it_once(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    payment = _soft_declined(merchant, settings, delays=(60, 120))
    with django_capture_on_commit_callbacks(execute=True):
        opened = [services.payment_retries_run(now=payment.next_retry_at) for _ in range(2)]
    assert opened == [1, 0]
    payment.refresh_from_db()
    assert (payment.retry_count, payment.attempts.count()) == (1, 2)
    assert len(simulator.control.charges(order_id=payment.id)) == 2


@pytest.mark.django_db
def test_off_session_with_another_merchant_s_or_a_detached_method_is_refused(
        simulator, merchant, api, other_api):
    routing_rule("cielo")
    method = save_card(merchant, "cielo")
    body = {"amount": 2500, "currency": "brl", "payment_method": method.id,
            "off_session": True, "confirm": True}
    assert_error(other_api.post("/payments", body, key="steal-1"), 404)
    services.payment_method_detach(merchant=merchant, payment_method_id=method.id)
    refused = api.post("/payments", body, key="detached-1")
    assert refused.status_code in (400, 404, 409), refused.content
    assert simulator.control.charges() == []


@pytest.mark.django_db
def test_replaying_a_create_with_off_session_changed_is_422(simulator, merchant, api):
    routing_rule("cielo")
    method = save_card(merchant, "cielo")
    body = {"amount": 2500, "currency": "brl", "payment_method": method.id,
            "off_session": False}
    assert api.post("/payments", body, key="replay-1").status_code in (200, 201, 202)
    assert_error(api.post("/payments", {**body, "off_session": True}, key="replay-1"), 422)
    assert Payment.objects.filter(merchant=merchant).count() == 1


@pytest.mark.django_db
def test_a_retry_whose_task_was_lost_is_sent_by_the_janitor_with_its_own_key(
        simulator, merchant, settings, time_machine, django_capture_on_commit_callbacks):
    """The retry's attempt is opened but its task is lost before the call. Asked by order id,
    the provider shows only the first try's decline: that is no answer about the retry, which
    the provider never saw, so the janitor sends it (its own idempotency key), once."""
    time_machine.move_to(T0, tick=False)
    payment = _soft_declined(merchant, settings)
    time_machine.move_to(payment.next_retry_at, tick=False)
    assert services.payment_retries_run() == 1  # its on-commit task never runs
    retry = payment.attempts.order_by("-created_at").first()
    assert retry.status == "requested"

    time_machine.move_to(retry.created_at + timedelta(minutes=10), tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.janitor_job()
    retry.refresh_from_db()
    payment.refresh_from_db()
    assert (retry.status, payment.status, payment.failure_code, payment.retry_count) == (
        "declined", "failed", "insufficient_funds", 1)
    assert [c["status"] for c in simulator.control.charges(order_id=payment.id)] == [
        "declined"] * 2


@pytest.mark.django_db
def test_a_late_approval_of_the_declined_try_while_its_retry_is_out_is_a_break(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    """The approval of the first try arrives while the retry's answer is lost: it is no answer
    to the retry (which keeps waiting for its own), and a person gets the contradiction."""
    payment = _soft_declined(merchant, settings, delays=(60, 120))
    first = payment.attempts.get()
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["authorize"])
    payment = _retry(payment, django_capture_on_commit_callbacks)
    retry = payment.attempts.order_by("-created_at").first()
    for _ in range(2):  # redelivered
        services.payment_provider_event_apply(
            provider="cielo", type="payment.authorized",
            provider_reference=first.provider_reference, merchant_reference=payment.id,
            amount=payment.amount, currency="brl")
    _still_without_an_answer(payment, retry)
    assert Break.objects.filter(payment_id=payment.id, type="status_mismatch").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("lie", ["amount", "currency", "another_payment_s_reference"])
def test_a_retry_approved_for_another_amount_currency_or_charge_moves_no_money(
        simulator, merchant, settings, django_capture_on_commit_callbacks, monkeypatch,
        make_payment, lie):
    """The provider approves the retry but names another amount, currency or a charge another
    payment holds: evidence for a person, no money moved, no further retry."""
    payment = _soft_declined(merchant, settings, delays=(60, 120))
    held_by_other = make_payment(currency="brl")
    real_call = services.provider_call

    def lying(code, operation, request, **kwargs):
        answer = real_call(code, operation, request, **kwargs)
        if operation != "authorize" or request.merchant_reference != payment.id:
            return answer
        return replace(answer, outcome=Outcome.APPROVED, error_code="", error_message="",
                       status=ProviderStatus.CAPTURED,
                       amount=request.amount + (1 if lie == "amount" else 0),
                       currency="usd" if lie == "currency" else "brl",
                       provider_reference=(held_by_other.provider_reference
                                           if lie == "another_payment_s_reference"
                                           else answer.provider_reference))

    if lie == "another_payment_s_reference":
        Payment.objects.filter(pk=held_by_other.pk).update(provider="cielo")
    monkeypatch.setattr(services, "provider_call", lying)
    payment = _retry(payment, django_capture_on_commit_callbacks)
    retry = payment.attempts.order_by("-created_at").first()
    assert (retry.status, payment.status, payment.amount_captured, payment.next_retry_at) == (
        "unknown", "authorization_requested", 0, None)
    assert Break.objects.filter(payment_id=payment.id).count() == 1
    assert ledger_verify().ok


@pytest.mark.parametrize("delays", [[0, 3600], [-3600], [60] * 9])
def test_start_up_refuses_retry_delays_that_are_not_positive_or_past_the_bound(
        settings, delays):
    """An operator's PAYMENT_RETRY_DELAYS of 0 or a negative number retries the card at once,
    janitor run after janitor run; a ninth entry would be dropped without a word."""
    settings.PAYMENT_RETRY_DELAYS = delays
    assert "payments.E004" in [message.id for message in run_checks()]
    settings.PAYMENT_RETRY_DELAYS = [3600, 86400]
    assert "payments.E004" not in [message.id for message in run_checks()]


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["retry", "first_try"])
def test_an_authorization_sent_late_after_the_card_was_detached_charges_nothing(
        simulator, merchant, settings, which):
    """The attempt is opened (a retry, or the first try of a confirmed payment); its task runs
    late (a broker backlog, or the janitor sending one that was lost) after the customer
    detached the card. The card is not charged: the provider shows no charge of the attempt,
    so it fails as detached."""
    if which == "retry":
        payment = _soft_declined(merchant, settings)
        assert services.payment_retries_run(now=payment.next_retry_at) == 1  # task not run
    else:
        routing_rule("cielo")
        payment = services.payment_create(
            merchant=merchant, amount=2500, currency="brl", confirm=True, off_session=True,
            payment_method=save_card(merchant, "cielo").id)
    retry = payment.attempts.order_by("-created_at").first()
    services.payment_method_detach(merchant=merchant, payment_method_id=payment.saved_method_id)

    services.payment_authorization_execute(attempt_id=retry.id)

    retry.refresh_from_db()
    payment.refresh_from_db()
    assert len(simulator.control.charges(order_id=payment.id)) == (which == "retry")
    assert (retry.status, payment.status, payment.failure_code) == (
        "declined", "failed", "payment_method_detached")


@pytest.mark.django_db
def test_a_redelivered_decline_notice_while_the_retry_waits_changes_nothing(
        simulator, merchant, settings):
    payment = _soft_declined(merchant, settings, delays=(60, 120))
    first = payment.attempts.get()
    for _ in range(2):
        services.payment_provider_event_apply(
            provider="cielo", type="payment.declined",
            provider_reference=first.provider_reference, merchant_reference=payment.id,
            error_code="insufficient_funds")
    waiting = Payment.objects.get(pk=payment.pk)
    assert (waiting.status, waiting.next_retry_at, waiting.retry_count) == (
        "authorization_requested", payment.next_retry_at, 0)
    assert list(Event.objects.filter(object_id=payment.id, type="payment.retry_scheduled")
                .values_list("type", flat=True)) == ["payment.retry_scheduled"]
    assert not Break.objects.filter(payment_id=payment.id).exists()


@pytest.mark.django_db
def test_another_merchant_s_customer_cannot_be_named_with_one_s_own_method(
        simulator, merchant, other_api):
    routing_rule("cielo")
    victim = services.customer_create(merchant=merchant, email="ana@example.com")
    response = other_api.post("/payments", {
        "amount": 2500, "currency": "brl", "payment_method": "pm_card_visa",
        "customer": victim.id, "confirm": True}, key="steal-customer")
    assert_error(response, 404)
    assert not Payment.objects.filter(customer=victim).exists()


@pytest.mark.django_db
def test_a_late_approval_of_the_declined_try_after_its_retry_took_the_money_is_a_break(
        simulator, merchant, settings, django_capture_on_commit_callbacks, monkeypatch):
    """The retry is approved and captured; then the provider's notice says the first, declined
    try was approved too: the customer may have paid twice. It must reach a person."""
    payment = _soft_declined(merchant, settings)
    first = payment.attempts.get()
    funded = tokenize("cielo")  # the customer's account has money again
    real_call = services.provider_call

    def funded_now(code, operation, request, **kwargs):
        if operation == "authorize":
            request = replace(request, payment_method=funded)
        return real_call(code, operation, request, **kwargs)

    monkeypatch.setattr(services, "provider_call", funded_now)
    payment = _retry(payment, django_capture_on_commit_callbacks)
    assert (payment.status, payment.amount_captured) == ("captured", payment.amount)

    services.payment_provider_event_apply(
        provider="cielo", type="payment.authorized", provider_reference=first.provider_reference,
        merchant_reference=payment.id, amount=payment.amount, currency="brl")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", payment.amount)
    assert Break.objects.filter(payment_id=payment.id, type="status_mismatch").count() == 1
