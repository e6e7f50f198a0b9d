"""Incremental authorization: an authorized payment raised to a new total where its provider
offers it (one approval of exactly that total raises it once, idempotently), refused with a clear
code where it does not, and an approval for another amount moves nothing (a break)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction

from ledger.models import JournalEntry
from payments.models import Payment, PaymentAttempt
from providers.base import Outcome, ProviderResult, ProviderStatus
from providers.models import SandboxCharge
from providers.sandbox import SandboxProvider
from reconciliation.models import ReconciliationBreak
from tests.conftest import assert_error
from webhooks.models import Event

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _increment(api, payment: Payment, amount: int, key: str | None = None):
    return api.post(f"/payments/{payment.id}/increment_authorization", {"amount": amount},
                    key=key)


def test_an_increment_approved_then_captured_in_full(api, make_payment):
    payment = make_payment(10000, state="authorized")
    raised = _increment(api, payment, 15000, key="raise-the-tab")
    assert raised.status_code == 200, raised.json()
    assert (raised.json()["amount"], raised.json()["amount_authorized"],
            raised.json()["status"]) == (15000, 15000, "authorized")
    replay = _increment(api, payment, 15000, key="raise-the-tab")
    assert replay.json() == raised.json()
    assert payment.attempts.filter(kind="increment", status="approved").count() == 1
    assert SandboxCharge.objects.get(pk=payment.provider_reference).amount == 15000
    assert Event.objects.filter(object_id=payment.id,
                                type="payment.authorization_incremented").count() == 1

    captured = api.post(f"/payments/{payment.id}/capture")
    assert (captured.json()["status"], captured.json()["amount_captured"]) == ("captured", 15000)
    [entry] = JournalEntry.objects.filter(reference_id=payment.id, kind="capture")
    assert max(p.amount for p in entry.postings.all()) == 15000


def test_an_increment_that_does_not_raise_the_authorization_is_400_and_changes_nothing(
        api, make_payment):
    payment = make_payment(10000, state="authorized")
    assert_error(_increment(api, payment, 10000), 400, code="amount_too_small", param="amount")
    payment.refresh_from_db()
    assert (payment.amount, payment.amount_authorized) == (10000, 10000)
    assert not payment.attempts.filter(kind="increment").exists()


def test_an_increment_needs_an_open_uncaptured_authorization_of_this_merchant(
        api, other_api, make_payment):
    captured = make_payment(10000)
    assert_error(_increment(api, captured, 20000), 409, code="payment_unexpected_state")
    partial = make_payment(10000, state="authorized")
    api.post(f"/payments/{partial.id}/capture", {"amount": 1000, "final_capture": False})
    assert_error(_increment(api, partial, 20000), 409, code="payment_unexpected_state")
    assert_error(_increment(other_api, partial, 20000), 404, code="resource_missing")
    partial.refresh_from_db()
    assert partial.amount_authorized == 10000


def test_a_provider_without_incremental_authorization_answers_409(simulator, merchant, api):
    from tests.test_authorization_lifecycle import _authorized

    payment = _authorized(merchant, "rede")
    assert_error(_increment(api, payment, 9000), 409,
                 code="incremental_authorization_unsupported")
    payment.refresh_from_db()
    assert (payment.amount_authorized, payment.attempts.count()) == (5000, 1)


def test_an_increment_approved_for_another_amount_moves_nothing_and_opens_a_break(
        api, make_payment, monkeypatch):
    payment = make_payment(10000, state="authorized")

    def approves_less(self, request):
        return ProviderResult(outcome=Outcome.APPROVED, status=ProviderStatus.AUTHORIZED,
                              provider_reference=request.provider_reference, amount=12000,
                              currency="usd")

    monkeypatch.setattr(SandboxProvider, "increment_authorization", approves_less)
    _increment(api, payment, 15000)
    payment.refresh_from_db()
    assert (payment.amount, payment.amount_authorized) == (10000, 10000)
    assert payment.attempts.get(kind="increment").status == "unknown"
    assert ReconciliationBreak.objects.filter(payment_id=payment.id,
                                              type="amount_mismatch").count() == 1
    assert not Event.objects.filter(object_id=payment.id,
                                    type="payment.authorization_incremented").exists()


def test_the_database_refuses_an_increment_that_lowers_or_runs_beside_a_capture(make_payment):
    payment = make_payment(10000, state="authorized")
    with pytest.raises(IntegrityError, match="cannot be raised"), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="increment", provider="sandbox",
                                      amount=9000)
    PaymentAttempt.objects.create(payment=payment, kind="capture", provider="sandbox",
                                  amount=1000)  # sent, no answer yet
    with pytest.raises(IntegrityError, match="without an answer"), transaction.atomic():
        PaymentAttempt.objects.create(payment=payment, kind="increment", provider="sandbox",
                                      amount=20000)


def test_an_increment_at_getnet_is_raised_at_the_simulator_then_captured_in_full(
        simulator, merchant, api):
    from tests.test_authorization_lifecycle import _authorized

    payment = _authorized(merchant, "getnet", amount=5000)
    raised = _increment(api, payment, 8000)
    assert raised.status_code == 200, raised.json()
    assert raised.json()["amount_authorized"] == 8000
    captured = api.post(f"/payments/{payment.id}/capture")
    assert (captured.json()["status"], captured.json()["amount_captured"]) == ("captured", 8000)
    [charge] = simulator.control.charges(order_id=payment.id)
    assert (charge["amount"], charge["captured"], charge["status"]) == (8000, 8000, "captured")


def test_an_increment_whose_answer_was_lost_is_recorded_once_by_the_janitor(
        simulator, merchant, api, time_machine):
    from reconciliation import jobs
    from tests.test_authorization_lifecycle import _authorized

    time_machine.move_to(T0, tick=False)
    payment = _authorized(merchant, "getnet", amount=5000)
    simulator.control.configure("getnet", drop_rate=1.0, fault_operations=["increment"])
    assert_error(_increment(api, payment, 8000), 502, code="provider_outcome_unknown")
    payment.refresh_from_db()
    assert payment.amount_authorized == 5000
    assert_error(api.post(f"/payments/{payment.id}/capture"), 409,
                 code="payment_operation_in_progress")

    simulator.control.configure("getnet", drop_rate=0.0)
    time_machine.move_to(T0 + timedelta(minutes=6), tick=False)
    assert jobs.janitor_job().fixed == 1
    payment.refresh_from_db()
    assert (payment.amount, payment.amount_authorized) == (8000, 8000)
    assert payment.attempts.filter(kind="increment").count() == 1
    assert Event.objects.filter(object_id=payment.id,
                                type="payment.authorization_incremented").count() == 1
    [charge] = simulator.control.charges(order_id=payment.id)
    assert charge["amount"] == 8000
