"""Several partial captures of one authorization (`final_capture: false`): each its own provider
call, attempt, journal entry and event; together never above the authorization (400, the row
lock and the guard trigger); cancel, expiry and lost answers of a partially captured payment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction

from core.errors import ProviderError, StateError
from ledger.models import JournalEntry
from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment, PaymentAttempt
from providers.base import Outcome, ProviderResult
from providers.models import SandboxCharge
from providers.sandbox import SandboxProvider
from reconciliation import jobs
from tests.conftest import assert_error
from tests.threads import run_threads
from webhooks.models import Event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _capture_entries(payment: Payment) -> list[tuple[str, int]]:
    """(reference type, amount) of the payment's capture entries, oldest first."""
    ids = [payment.id, *payment.attempts.filter(kind="capture").values_list("id", flat=True)]
    entries = JournalEntry.objects.filter(kind="capture", reference_id__in=ids)
    return [(entry.reference_type, sum(p.amount for p in entry.postings.all() if p.amount > 0))
            for entry in entries.order_by("sequence").prefetch_related("postings")]


def _events(payment: Payment, type: str) -> int:
    return Event.objects.filter(object_id=payment.id, type=type).count()


def _charge(payment: Payment) -> SandboxCharge:
    return SandboxCharge.objects.get(pk=payment.provider_reference)


@pytest.mark.django_db
def test_two_partial_captures_and_a_final_one_add_up_with_one_ledger_entry_each(
        api, make_payment):
    payment = make_payment(10000, state="authorized")
    first = api.post(f"/payments/{payment.id}/capture", {"amount": 3000, "final_capture": False})
    assert first.status_code == 200, first.json()
    assert (first.json()["status"], first.json()["amount_captured"]) == ("authorized", 3000)
    second = api.post(f"/payments/{payment.id}/capture", {"amount": 2000, "final_capture": False})
    assert (second.json()["status"], second.json()["amount_captured"]) == ("authorized", 5000)
    final = api.post(f"/payments/{payment.id}/capture", {"amount": 1000})
    assert (final.json()["status"], final.json()["amount_captured"]) == ("captured", 6000)
    assert final.json()["amount_authorized"] == 10000

    captures = list(payment.attempts.filter(kind="capture").order_by("created_at"))
    assert [(a.amount, a.status, a.is_final) for a in captures] == [
        (3000, "approved", False), (2000, "approved", False), (1000, "approved", True)]
    assert len({a.provider_idempotency_key for a in captures}) == 3
    assert _capture_entries(payment) == [("payment", 3000), ("capture", 2000), ("capture", 1000)]
    assert (_events(payment, "payment.partially_captured"), _events(payment, "payment.captured")
            ) == (2, 1)
    charge = _charge(payment)
    assert (charge.status, charge.captured) == ("captured", 6000)
    assert ledger_verify().ok

    # The final capture ended the authorization: nothing more to capture, refunds stop at 6000.
    assert_error(api.post(f"/payments/{payment.id}/capture", {"amount": 1}), 409,
                 code="payment_unexpected_state")
    assert_error(api.post("/refunds", {"payment": payment.id, "amount": 6001}), 409,
                 code="amount_too_large")
    assert api.post("/refunds", {"payment": payment.id, "amount": 6000}).status_code == 200


@pytest.mark.django_db
def test_capturing_above_what_is_left_of_the_authorization_is_400_and_changes_nothing(
        api, make_payment):
    payment = make_payment(10000, state="authorized")
    api.post(f"/payments/{payment.id}/capture", {"amount": 7000, "final_capture": False})
    refused = api.post(f"/payments/{payment.id}/capture", {"amount": 3001})
    assert_error(refused, 400, code="amount_too_large")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", 7000)
    assert payment.attempts.filter(kind="capture").count() == 1

    # PostgreSQL refuses the same capture attempt from any path that skips the service.
    with pytest.raises(IntegrityError, match="would exceed its authorization"), \
            transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="capture", provider="sandbox",
                                      amount=3001)


@pytest.mark.django_db
def test_partial_captures_that_reach_the_authorized_amount_end_the_authorization(
        api, make_payment):
    payment = make_payment(5000, state="authorized")
    api.post(f"/payments/{payment.id}/capture", {"amount": 2000, "final_capture": False})
    done = api.post(f"/payments/{payment.id}/capture", {"final_capture": False})
    assert (done.json()["status"], done.json()["amount_captured"]) == ("captured", 5000)
    assert _charge(payment).status == "captured"
    assert _events(payment, "payment.captured") == 1


@pytest.mark.django_db
def test_a_provider_that_takes_one_capture_refuses_final_capture_false(simulator, merchant,
                                                                       api):
    from tests.test_authorization_lifecycle import _authorized

    payment = _authorized(merchant, "cielo")
    refused = api.post(f"/payments/{payment.id}/capture",
                       {"amount": 1000, "final_capture": False})
    assert_error(refused, 400, code="multicapture_unsupported")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", 0)
    assert not payment.attempts.filter(kind="capture").exists()


@pytest.mark.django_db
def test_cancel_of_a_partially_captured_payment_releases_the_rest_and_ends_captured(
        api, make_payment):
    payment = make_payment(10000, state="authorized")
    api.post(f"/payments/{payment.id}/capture", {"amount": 4000, "final_capture": False})
    canceled = api.post(f"/payments/{payment.id}/cancel",
                        {"cancellation_reason": "requested_by_customer"})
    assert canceled.status_code == 200
    body = canceled.json()
    assert (body["status"], body["amount_captured"], body["cancellation_reason"]) == (
        "captured", 4000, None)
    assert _charge(payment).status == "captured"
    assert _capture_entries(payment) == [("payment", 4000)]
    assert _events(payment, "payment.canceled") == 0


@pytest.mark.django_db
def test_an_expired_partially_captured_authorization_ends_captured_with_its_captures(
        merchant, make_payment):
    payment = make_payment(10000, state="authorized")
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=2500,
                             final_capture=False)
    payment.refresh_from_db()
    later = payment.authorization_expires_at + timedelta(seconds=1)
    assert services.payment_authorizations_expire(now=later) == 1
    assert services.payment_authorizations_expire(now=later) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured, payment.cancellation_reason) == (
        "captured", 2500, "")
    assert list(payment.attempts.order_by("created_at").values_list("kind", "status")) == [
        ("authorize", "approved"), ("capture", "approved"), ("void", "approved")]
    assert _charge(payment).status == "captured"
    assert _events(payment, "payment.captured") == 1
    assert _capture_entries(payment) == [("payment", 2500)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_captures_never_exceed_the_authorization(make_payment, merchant):
    payment = make_payment(10000, state="authorized")

    def capture(_: int) -> Payment:
        return services.payment_capture(merchant=merchant, payment_id=payment.id, amount=4000,
                                        final_capture=False)

    results, errors = run_threads(4, capture)
    assert all(isinstance(e, (StateError, ProviderError)) or getattr(e, "code", "") ==
               "amount_too_large" for e in errors), errors
    payment.refresh_from_db()
    approved = payment.attempts.filter(kind="capture", status="approved")
    assert payment.amount_captured == sum(a.amount for a in approved) <= 10000
    assert sum(amount for _, amount in _capture_entries(payment)) == payment.amount_captured
    assert _charge(payment).captured == payment.amount_captured
    assert len(results) == approved.count() >= 1


def _answer_lost(monkeypatch, *, applied: bool) -> None:
    """The sandbox's next capture answer is lost (UNKNOWN): after applying it, or before."""
    real = SandboxProvider.capture

    def lost(self, request):
        if applied:
            real(self, request)
        return ProviderResult(outcome=Outcome.UNKNOWN, error_code="timeout",
                              error_message="read timed out")

    monkeypatch.setattr(SandboxProvider, "capture", lost)


@pytest.mark.django_db
@pytest.mark.parametrize("applied", [True, False], ids=["applied", "never_applied"])
def test_a_partial_capture_without_an_answer_is_resolved_by_the_janitor_once(
        merchant, make_payment, monkeypatch, time_machine, applied):
    time_machine.move_to(T0, tick=False)
    payment = make_payment(10000, state="authorized")
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=1000,
                             final_capture=False)
    with monkeypatch.context() as patch:
        _answer_lost(patch, applied=applied)
        with pytest.raises(ProviderError, match="unknown"):
            services.payment_capture(merchant=merchant, payment_id=payment.id, amount=3000,
                                     final_capture=False)
    payment.refresh_from_db()
    assert payment.amount_captured == 1000
    with pytest.raises(StateError, match="in progress"):  # never a second one beside it
        services.payment_capture(merchant=merchant, payment_id=payment.id, amount=500)

    time_machine.move_to(T0 + timedelta(minutes=6), tick=False)
    run = jobs.janitor_job()
    assert run.fixed == 1, run.details
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", 4000)
    assert _charge(payment).captured == 4000  # captured once at the provider
    assert _capture_entries(payment) == [("payment", 1000), ("capture", 3000)]
    assert jobs.janitor_job().fixed == 0
    assert ledger_verify().ok
