"""Attacks on off-session payments and delayed retries of soft declines: a provider that
redelivers, reorders or contradicts its notices and lookups, and a hostile API client. Each
test is either a hole found and fixed or an attack that held."""

from __future__ import annotations

import pytest

from payments import services
from payments.models import Payment
from reconciliation.models import ReconciliationBreak as Break
from tests.conftest import routing_rule
from tests.test_saved_payment_methods import charge, tokenize

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

    retry.refresh_from_db()
    payment.refresh_from_db()
    assert retry.status == "unknown"
    assert (payment.status, payment.next_retry_at, payment.retry_count) == (
        "authorization_requested", None, 1)


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
