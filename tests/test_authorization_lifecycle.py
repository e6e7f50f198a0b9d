"""The authorization lifecycle: an authorization expires when its provider lets it lapse (the
janitor voids it at the provider exactly once, the payment is canceled `expired` with its
event), a capture never exceeds what was authorized (400, and a CHECK in PostgreSQL), and a
merchant's cancellation reason is kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction

from payments import services
from payments.models import Payment
from providers.base import Outcome, ProviderResult
from reconciliation.models import ReconciliationBreak
from tests.conftest import routing_rule
from webhooks.models import Event


def _authorized(merchant, code: str = "cielo", amount: int = 5000) -> Payment:
    routing_rule(code)
    payment = services.payment_create(merchant=merchant, amount=amount, currency="brl",
                                      payment_method="pm_card_visa", capture_method="manual",
                                      confirm=True)
    services.payment_authorization_execute(attempt_id=payment.attempts.get().id)
    payment = Payment.objects.get(pk=payment.pk)
    assert payment.status == "authorized"
    return payment


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "days"), [("cielo", 15), ("rede", 28)])
def test_an_expired_authorization_is_voided_by_the_janitor_exactly_once(simulator, merchant,
                                                                        code, days):
    payment = _authorized(merchant, code)
    sent_at = payment.attempts.get().created_at
    assert payment.authorization_expires_at == sent_at + timedelta(days=days)

    assert services.payment_authorizations_expire(
        now=payment.authorization_expires_at - timedelta(seconds=1)) == 0
    later = payment.authorization_expires_at + timedelta(seconds=1)
    assert services.payment_authorizations_expire(now=later) == 1
    assert services.payment_authorizations_expire(now=later) == 0  # a second janitor pass

    payment.refresh_from_db()
    assert (payment.status, payment.cancellation_reason) == ("canceled", "expired")
    assert list(payment.attempts.order_by("created_at").values_list("kind", "status")) == [
        ("authorize", "approved"), ("void", "approved")]
    [charge] = simulator.control.charges(order_id=payment.id)
    assert charge["status"] == "voided"
    canceled = Event.objects.filter(object_id=payment.id, type="payment.canceled")
    assert [e.data["cancellation_reason"] for e in canceled] == ["expired"]


@pytest.mark.django_db
def test_a_void_refused_while_the_provider_is_down_is_tried_again_then_kept_for_people(
        simulator, merchant):
    """A refusal that did nothing there (the provider down) is no reason to hold the
    authorization forever: a later run voids again under a new key, up to VOID_TRIES; then the
    provider, still holding it, gets one break and no more voids."""
    payment = _authorized(merchant)
    simulator.control.configure("cielo", unavailable_rate=1.0, fault_operations=["void"])
    later = payment.authorization_expires_at + timedelta(seconds=1)
    for _ in range(services.VOID_TRIES + 2):
        assert services.payment_authorizations_expire(now=later) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.cancellation_reason) == ("authorized", "")
    assert payment.attempts.filter(kind="void").count() == services.VOID_TRIES
    assert list(ReconciliationBreak.objects.filter(payment_id=payment.id)
                .values_list("key", flat=True)) == [
        f"authorization_void_refused:cielo:{payment.id}"]


@pytest.mark.django_db
def test_an_expiry_void_refused_once_by_the_provider_then_sent_again_releases_it(
        simulator, merchant):
    payment = _authorized(merchant)
    simulator.control.configure("cielo", unavailable_rate=1.0, fault_operations=["void"])
    later = payment.authorization_expires_at + timedelta(seconds=1)
    assert services.payment_authorizations_expire(now=later) == 0
    simulator.control.configure("cielo", unavailable_rate=0.0)
    assert services.payment_authorizations_expire(now=later) == 1
    payment.refresh_from_db()
    assert (payment.status, payment.cancellation_reason) == ("canceled", "expired")
    assert [charge["status"] for charge in simulator.control.charges(order_id=payment.id)] == [
        "voided"]


@pytest.mark.django_db
def test_a_definite_refusal_with_the_authorization_still_held_is_one_break(
        simulator, merchant, monkeypatch):
    payment = _authorized(merchant)
    real, voids = services.provider_call, []

    def refusing(provider, operation, request, **kwargs):
        if operation != "void":
            return real(provider, operation, request, **kwargs)
        voids.append(request.idempotency_key)
        return ProviderResult(outcome=Outcome.DECLINED, error_code="invalid_state",
                              provider_reference=payment.provider_reference)

    monkeypatch.setattr(services, "provider_call", refusing)
    later = payment.authorization_expires_at + timedelta(seconds=1)
    for _ in range(3):
        assert services.payment_authorizations_expire(now=later) == 0
    payment.refresh_from_db()
    assert payment.status == "authorized" and len(voids) == 1
    assert ReconciliationBreak.objects.filter(
        payment_id=payment.id, key__startswith="authorization_void_refused:").count() == 1


@pytest.mark.django_db
def test_a_captured_payment_is_not_expired(simulator, merchant):
    payment = _authorized(merchant)
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=3000)
    assert services.payment_authorizations_expire(
        now=payment.authorization_expires_at + timedelta(days=1)) == 0


@pytest.mark.django_db
def test_capturing_above_the_authorization_is_400_and_the_database_refuses_it(
        simulator, merchant, api):
    payment = _authorized(merchant, amount=5000)
    refused = api.post(f"/payments/{payment.id}/capture", {"amount": 5001})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "amount_too_large"
    Payment.objects.filter(pk=payment.pk).update(amount_authorized=4000)
    with pytest.raises(IntegrityError, match="payment_captured_within_authorized"), \
            transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(amount_captured=4500)


@pytest.mark.django_db
def test_a_merchant_s_cancellation_reason_is_kept_and_expired_is_reserved(api):
    created = api.post("/payments", {"amount": 100, "currency": "usd",
                                     "payment_method": "pm_card_visa"}).json()
    assert api.post(f"/payments/{created['id']}/cancel",
                    {"cancellation_reason": "expired"}).status_code == 400
    canceled = api.post(f"/payments/{created['id']}/cancel",
                        {"cancellation_reason": "requested_by_customer"})
    assert canceled.status_code == 200
    assert canceled.json()["cancellation_reason"] == "requested_by_customer"


@pytest.mark.django_db
def test_a_provider_that_refused_the_void_is_asked_hourly_not_on_every_run(
        simulator, merchant, monkeypatch, time_machine):
    """After a definite refusal with the authorization still held (one break for people), the
    janitor's 5-minute runs do not ask the provider each time: once an hour."""
    payment = _authorized(merchant)
    real, calls = services.provider_call, []

    def provider(code, operation, request, **kwargs):
        calls.append(operation)
        if operation == "void":
            return ProviderResult(outcome=Outcome.DECLINED, error_code="invalid_state",
                                  provider_reference=payment.provider_reference)
        return real(code, operation, request, **kwargs)  # the lookup: still authorized

    monkeypatch.setattr(services, "provider_call", provider)
    start = payment.authorization_expires_at + timedelta(seconds=1)
    time_machine.move_to(start, tick=False)
    assert services.payment_authorizations_expire() == 0
    assert calls == ["void", "retrieve"]
    for minutes in (5, 10, 55):
        time_machine.move_to(start + timedelta(minutes=minutes), tick=False)
        assert services.payment_authorizations_expire() == 0
    assert calls == ["void", "retrieve"], "asked again within the hour"
    time_machine.move_to(start + timedelta(hours=1, seconds=1), tick=False)
    assert services.payment_authorizations_expire() == 0
    assert calls == ["void", "retrieve", "retrieve"]
    assert ReconciliationBreak.objects.filter(
        payment_id=payment.id, key__startswith="authorization_void_refused:").count() == 1
