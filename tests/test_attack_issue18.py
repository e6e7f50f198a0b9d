"""Attacks on issue 18 (saved methods, delayed retries, authorization expiry): a detached card
is never charged later by a delayed retry or a late confirm, an expired authorization is not
captured, and the database refuses a second capture or void beside one still open."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction

from core.errors import NotFound, StateError
from payments import services
from payments.models import Payment, PaymentAttempt
from tests.conftest import merchant_with_key, routing_rule
from tests.test_authorization_lifecycle import _authorized
from tests.test_saved_payment_methods import charge, save_card, tokenize

INSUFFICIENT_FUNDS = "4000000000009995"


@pytest.mark.django_db
def test_a_delayed_retry_never_charges_a_card_detached_since_the_decline(
        simulator, merchant, settings, django_capture_on_commit_callbacks):
    settings.PAYMENT_RETRY_DELAYS = [60]
    routing_rule("cielo")
    method = services.payment_method_create(merchant=merchant, provider="cielo",
                                            token=tokenize("cielo", INSUFFICIENT_FUNDS))
    payment = charge(merchant, method.id, off_session=True)
    assert payment.next_retry_at is not None
    services.payment_method_detach(merchant=merchant, payment_method_id=method.id)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.payment_retries_run(now=payment.next_retry_at) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code, payment.next_retry_at) == (
        "failed", "payment_method_detached", None)
    assert payment.attempts.count() == 1
    assert len(simulator.control.charges(order_id=payment.id)) == 1
    # The database refuses an authorization of a detached card whatever the code path.
    with pytest.raises(IntegrityError, match="detached"), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="authorize", provider="cielo",
                                      amount=payment.amount)


@pytest.mark.django_db
def test_confirming_after_the_card_was_detached_is_refused_and_sends_nothing(
        simulator, merchant):
    routing_rule("cielo")
    method = save_card(merchant, "cielo")
    payment = services.payment_create(merchant=merchant, amount=2500, currency="brl",
                                      payment_method=method.id, confirm=False)
    services.payment_method_detach(merchant=merchant, payment_method_id=method.id)
    with pytest.raises(StateError, match="detached"):
        services.payment_confirm(merchant=merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.status == "created"
    assert not payment.attempts.exists()
    assert simulator.control.charges(order_id=payment.id) == []


@pytest.mark.django_db
def test_an_authorization_past_its_expiry_is_not_captured(simulator, merchant):
    payment = _authorized(merchant)
    Payment.objects.filter(pk=payment.pk).update(
        authorization_expires_at=payment.authorization_expires_at - timedelta(days=30))
    with pytest.raises(StateError, match="expired"):
        services.payment_capture(merchant=merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", 0)
    assert not payment.attempts.filter(kind="capture").exists()
    with pytest.raises(IntegrityError, match="expired"), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="capture", provider="cielo",
                                      amount=payment.amount)
    # The janitor's void of it is still allowed.
    later = payment.authorization_expires_at + timedelta(seconds=1)
    assert services.payment_authorizations_expire(now=later) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("first", "second"), [("capture", "capture"), ("capture", "void"),
                                               ("void", "capture")])
def test_the_database_refuses_a_second_capture_or_void_beside_an_open_one(
        simulator, merchant, first, second):
    payment = _authorized(merchant)
    PaymentAttempt.objects.create(payment=payment, kind=first, provider="cielo", amount=3000)
    with pytest.raises(IntegrityError, match="already"), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind=second, provider="cielo",
                                      amount=3000)


@pytest.mark.django_db
def test_another_merchant_s_method_and_customer_are_404_and_pm_cannot_join_them(
        simulator, merchant):
    other_merchant = merchant_with_key()[0]
    routing_rule("cielo")
    theirs = services.payment_method_create(merchant=other_merchant, provider="cielo",
                                            token=tokenize("cielo", "5555555555554444"))
    their_customer = services.customer_create(merchant=other_merchant, email="a@b.c")
    mine = save_card(merchant, "cielo")
    with pytest.raises(NotFound):
        services.payment_create(merchant=merchant, amount=100, currency="brl",
                                payment_method=theirs.id, confirm=True)
    with pytest.raises(NotFound):
        services.payment_create(merchant=merchant, amount=100, currency="brl",
                                payment_method=mine.id, customer=their_customer.id,
                                confirm=True)
    with pytest.raises(NotFound):
        services.payment_method_detach(merchant=merchant, payment_method_id=theirs.id)
    with pytest.raises(IntegrityError, match="another merchant"), transaction.atomic():
        type(mine).objects.filter(pk=mine.pk).update(customer=their_customer)
    assert not Payment.objects.filter(merchant=merchant).exists()
