"""Attacks on partial captures and incremental authorization: hostile clients (races, replays,
bad bodies), providers that lie or lose answers, and the janitor's expiry of what is left. After
each, the books must agree: captured = approved captures = capture entries = the provider's."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.errors import ClearhouseError as ApiError
from ledger.models import JournalEntry
from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment
from providers.base import Outcome, ProviderResult, ProviderStatus
from providers.models import SandboxCharge
from providers.sandbox import SandboxProvider
from reconciliation import jobs
from reconciliation.models import ReconciliationBreak
from tests.conftest import assert_error
from tests.threads import run_threads
from webhooks.models import Event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _capture_entries(payment: Payment) -> list[int]:
    ids = [payment.id, *payment.attempts.filter(kind="capture").values_list("id", flat=True)]
    entries = JournalEntry.objects.filter(kind="capture", reference_id__in=ids)
    return [sum(p.amount for p in entry.postings.all() if p.amount > 0)
            for entry in entries.order_by("sequence").prefetch_related("postings")]


def _books_agree(payment: Payment) -> None:
    """What we captured is what the approved captures asked, one journal entry each, and what
    the sandbox's charge holds; the ledger verifies."""
    payment.refresh_from_db()
    approved = list(payment.attempts.filter(kind="capture", status="approved")
                    .values_list("amount", flat=True))
    assert payment.amount_captured == sum(approved) <= payment.amount_authorized
    assert sorted(_capture_entries(payment)) == sorted(approved)
    charge = SandboxCharge.objects.get(pk=payment.provider_reference)
    assert charge.captured == payment.amount_captured
    assert charge.amount == payment.amount_authorized
    assert ledger_verify().ok


def _answers(monkeypatch, operation: str, answer: ProviderResult) -> None:
    monkeypatch.setattr(SandboxProvider, operation, lambda self, request: answer)


_DECLINED = ProviderResult(outcome=Outcome.DECLINED, status=ProviderStatus.DECLINED,
                           error_code="card_declined", error_message="refused")


# -- (a) a hostile client ----------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("amount", [0, -1, "100", 10.5, 1e3, True, None, 10**12, [100]])
def test_a_capture_amount_that_is_not_a_positive_integer_is_400_and_moves_nothing(
        api, make_payment, amount):
    payment = make_payment(10000, state="authorized")
    refused = api.post(f"/payments/{payment.id}/capture",
                       {"amount": amount, "final_capture": False})
    assert_error(refused, 400, param="amount")
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", 0)
    assert not payment.attempts.filter(kind="capture").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("flag", ["maybe", None, 2, [], {"x": 1}])
def test_final_capture_that_is_not_a_boolean_is_400(api, make_payment, flag):
    payment = make_payment(10000, state="authorized")
    assert_error(api.post(f"/payments/{payment.id}/capture",
                          {"amount": 100, "final_capture": flag}), 400, param="final_capture")
    assert not payment.attempts.filter(kind="capture").exists()


@pytest.mark.django_db
def test_a_replayed_capture_key_with_another_body_never_captures_again(api, make_payment):
    payment = make_payment(10000, state="authorized")
    first = api.post(f"/payments/{payment.id}/capture", {"amount": 1000, "final_capture": False},
                     key="cap-1")
    assert first.status_code == 200
    other = api.post(f"/payments/{payment.id}/capture", {"amount": 2000, "final_capture": False},
                     key="cap-1")
    assert other.status_code == 422, other.content
    same = api.post(f"/payments/{payment.id}/capture", {"amount": 1000, "final_capture": False},
                    key="cap-1")
    assert same.json() == first.json()
    again = api.post(f"/payments/{payment.id}/increment_authorization", {"amount": 20000},
                     key="cap-1")
    assert again.status_code == 422, again.content
    _books_agree(payment)
    assert payment.amount_captured == 1000


@pytest.mark.django_db
def test_increments_that_do_not_raise_or_come_too_late_are_refused(api, make_payment):
    payment = make_payment(10000, state="authorized")
    for amount in (9999, 10000, 0, -5, 10**12):
        response = api.post(f"/payments/{payment.id}/increment_authorization",
                            {"amount": amount})
        assert response.status_code == 400, (amount, response.content)
    api.post(f"/payments/{payment.id}/capture", {"amount": 10000})
    assert_error(api.post(f"/payments/{payment.id}/increment_authorization", {"amount": 20000}),
                 409, code="payment_unexpected_state")
    canceled = make_payment(10000, state="authorized")
    api.post(f"/payments/{canceled.id}/cancel")
    assert_error(api.post(f"/payments/{canceled.id}/increment_authorization",
                          {"amount": 20000}), 409, code="payment_unexpected_state")
    assert_error(api.post(f"/payments/{canceled.id}/capture", {"amount": 1}), 409)
    assert not Payment.objects.filter(amount_authorized__gt=10000).exists()


@pytest.mark.django_db
def test_a_partially_captured_payment_takes_no_refund_beyond_what_was_captured(
        api, make_payment):
    payment = make_payment(10000, state="authorized")
    api.post(f"/payments/{payment.id}/capture", {"amount": 3000, "final_capture": False})
    refund = api.post("/refunds", {"payment": payment.id, "amount": 3001})
    assert refund.status_code in (400, 409), refund.content
    api.post(f"/payments/{payment.id}/cancel")
    assert_error(api.post("/refunds", {"payment": payment.id, "amount": 3001}), 409,
                 code="amount_too_large")
    assert api.post("/refunds", {"payment": payment.id, "amount": 3000}).status_code == 200
    _books_agree(payment)


@pytest.mark.django_db
def test_another_merchant_cannot_capture_or_raise(other_api, make_payment):
    payment = make_payment(10000, state="authorized")
    assert_error(other_api.post(f"/payments/{payment.id}/capture",
                                {"amount": 100, "final_capture": False}), 404)
    assert_error(other_api.post(f"/payments/{payment.id}/increment_authorization",
                                {"amount": 20000}), 404)
    assert payment.attempts.count() == 1


def _race(merchant, payment: Payment, *calls) -> list[BaseException]:
    def work(i: int):
        name, kwargs = calls[i]
        return getattr(services, name)(merchant=merchant, payment_id=payment.id, **kwargs)

    _, errors = run_threads(len(calls), work)
    assert all(isinstance(e, ApiError) for e in errors), errors
    return errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("calls", [
    [("payment_capture", {"amount": 4000, "final_capture": False}), ("payment_cancel", {})],
    [("payment_capture", {"amount": 4000, "final_capture": False}),
     ("payment_increment_authorization", {"amount": 15000})],
    [("payment_capture", {"amount": 6000, "final_capture": False}),
     ("payment_capture", {"amount": 6000, "final_capture": True})],
    [("payment_capture", {"amount": 3000, "final_capture": False})] * 4,
], ids=["capture_vs_cancel", "capture_vs_increment", "final_vs_partial", "four_partials"])
def test_racing_operations_leave_books_that_agree(make_payment, merchant, calls):
    payment = make_payment(10000, state="authorized")
    errors = _race(merchant, payment, *calls)
    assert len(errors) < len(calls)
    _books_agree(payment)
    if payment.status == "authorized":  # what is left can still be taken, exactly once
        services.payment_capture(merchant=merchant, payment_id=payment.id)
        _books_agree(payment)
        assert payment.amount_captured == payment.amount_authorized


# -- (b) a provider that lies, loses answers and repeats itself -------------------------------
@pytest.mark.django_db
def test_a_capture_approved_in_another_currency_moves_nothing(merchant, make_payment,
                                                              monkeypatch):
    payment = make_payment(10000, state="authorized")
    _answers(monkeypatch, "capture", ProviderResult(
        outcome=Outcome.APPROVED, status=ProviderStatus.AUTHORIZED, amount=3000, currency="eur",
        provider_reference=payment.provider_reference))
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=3000,
                             final_capture=False)
    payment.refresh_from_db()
    assert payment.amount_captured == 0
    assert payment.attempts.get(kind="capture").status == "unknown"
    assert not _capture_entries(payment)
    assert ReconciliationBreak.objects.filter(payment_id=payment.id,
                                              type="currency_mismatch").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("operation", ["capture", "increment_authorization"])
def test_a_lost_answer_is_resolved_with_one_provider_call_per_key(
        merchant, make_payment, monkeypatch, time_machine, operation):
    payment = make_payment(10000, state="authorized")
    calls: Counter[str] = Counter()
    real = getattr(SandboxProvider, operation)

    def lost(self, request):
        calls[request.idempotency_key] += 1
        real(self, request)
        return ProviderResult(outcome=Outcome.UNKNOWN, error_code="timeout")

    monkeypatch.setattr(SandboxProvider, operation, lost)
    call = (services.payment_capture if operation == "capture"
            else services.payment_increment_authorization)
    kwargs = {"amount": 3000, "final_capture": False} if operation == "capture" else {
        "amount": 12000}
    with pytest.raises(ApiError):
        call(merchant=merchant, payment_id=payment.id, **kwargs)
    for _ in range(3):  # the client retries, with and without keys
        with pytest.raises(ApiError, match="in progress"):
            call(merchant=merchant, payment_id=payment.id, **kwargs)
    attempt = payment.attempts.get(kind=operation.split("_")[0])
    for _ in range(3):
        services.payment_operation_lookup(attempt_id=attempt.id)
        services.payment_operation_execute(attempt_id=attempt.id)
    assert list(calls.values()) == [1]
    attempt.refresh_from_db()
    assert attempt.status == "approved"
    _books_agree(payment)
    assert (payment.amount_captured, payment.amount_authorized) == (
        (3000, 10000) if operation == "capture" else (0, 12000))


@pytest.mark.django_db
def test_a_lookup_saying_a_partially_captured_charge_was_voided_is_a_break(
        merchant, make_payment, monkeypatch):
    payment = make_payment(10000, state="authorized")
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=4000,
                             final_capture=False)
    _answers(monkeypatch, "void", ProviderResult(outcome=Outcome.UNKNOWN, error_code="timeout"))
    with pytest.raises(ApiError):
        services.payment_cancel(merchant=merchant, payment_id=payment.id)
    _answers(monkeypatch, "retrieve", ProviderResult(
        outcome=Outcome.APPROVED, status=ProviderStatus.VOIDED, amount=10000, currency="usd",
        provider_reference=payment.provider_reference, amount_captured=0))
    void = payment.attempts.get(kind="void")
    services.payment_operation_lookup(attempt_id=void.id)
    payment.refresh_from_db()
    # The provider denies the 4000 it approved: never a silent 'captured' with money it
    # says it never took.
    assert ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    assert (payment.status, payment.amount_captured) == ("authorized", 4000)
    assert payment.attempts.get(kind="void").status == "unknown"
    assert _capture_entries(payment) == [4000]
    assert ledger_verify().ok


@pytest.mark.django_db
@pytest.mark.parametrize("status, captured", [
    (ProviderStatus.CAPTURED, None), (ProviderStatus.CAPTURED, 10000),
    (ProviderStatus.VOIDED, 3000), (ProviderStatus.AUTHORIZED, None)],
    ids=["captured", "captured_in_full", "voided_with_money_taken", "still_authorized"])
def test_a_void_approved_while_the_provider_shows_money_taken_or_held_is_a_break(
        merchant, make_payment, monkeypatch, status, captured):
    """A void answered 'approved' whose charge the same answer shows captured (we took
    nothing), with money taken, or still authorized contradicts itself: canceling the payment
    would drop money the provider took from our books. A break holds both sides; the payment
    stays authorized and the void without an answer."""
    payment = make_payment(10000, state="authorized")
    _answers(monkeypatch, "void", ProviderResult(
        outcome=Outcome.APPROVED, status=status, amount=10000, currency="usd",
        provider_reference=payment.provider_reference, amount_captured=captured))
    services.payment_cancel(merchant=merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", 0)
    assert payment.attempts.get(kind="void").status == "unknown"
    brk = ReconciliationBreak.objects.get(payment_id=payment.id)
    assert (brk.type, brk.provider_data["status"]) == ("status_mismatch", str(status))
    assert not Event.objects.filter(object_id=payment.id, type="payment.canceled").exists()
    assert ledger_verify().ok


@pytest.mark.django_db
def test_a_void_approved_as_captured_after_our_partial_capture_ends_captured(
        merchant, make_payment):
    """The sandbox's own answer to voiding a partially captured charge (status captured, the
    rest released) is the normal case and still ends the payment captured."""
    payment = make_payment(10000, state="authorized")
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=4000,
                             final_capture=False)
    services.payment_cancel(merchant=merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4000)
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    _books_agree(payment)


# -- (c) the janitor ---------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("refused", ["increment_authorization", "capture"])
def test_a_refused_increment_or_capture_does_not_keep_the_rest_held_past_expiry(
        merchant, make_payment, monkeypatch, refused):
    payment = make_payment(10000, state="authorized")
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=2000,
                             final_capture=False) if refused == "capture" else None
    with monkeypatch.context() as patch:
        _answers(patch, refused, _DECLINED)
        with pytest.raises(ApiError):
            if refused == "capture":
                services.payment_capture(merchant=merchant, payment_id=payment.id, amount=1000,
                                         final_capture=False)
            else:
                services.payment_increment_authorization(merchant=merchant,
                                                         payment_id=payment.id, amount=20000)
    payment.refresh_from_db()
    later = payment.authorization_expires_at + timedelta(seconds=1)
    assert services.payment_authorizations_expire(now=later) == 1
    assert services.payment_authorizations_expire(now=later) == 0
    payment.refresh_from_db()
    assert payment.status == ("captured" if refused == "capture" else "canceled")
    assert payment.attempts.filter(kind="void").count() == 1
    charge = SandboxCharge.objects.get(pk=payment.provider_reference)
    assert charge.status != "authorized"  # nothing left held at the provider
    _books_agree(payment)


@pytest.mark.django_db
@pytest.mark.parametrize("operation", ["capture", "increment_authorization"])
def test_a_lookup_showing_the_operation_done_for_another_amount_is_never_sent_again(
        merchant, make_payment, monkeypatch, time_machine, operation):
    """The charge shows the lost capture (or increment) applied, but for another amount: a
    break, and never a second provider call for that key (the janitor must not take the
    still-`authorized` charge for 'never applied')."""
    time_machine.move_to(T0, tick=False)
    payment = make_payment(10000, state="authorized")
    calls: Counter[str] = Counter()
    real = getattr(SandboxProvider, operation)

    def short(self, request):  # applies another amount than asked, then the answer is lost
        calls[request.idempotency_key] += 1
        real(self, replace(request, amount=request.amount - 500))
        return ProviderResult(outcome=Outcome.UNKNOWN, error_code="timeout")

    monkeypatch.setattr(SandboxProvider, operation, short)
    with pytest.raises(ApiError):
        if operation == "capture":
            services.payment_capture(merchant=merchant, payment_id=payment.id, amount=3000,
                                     final_capture=False)
        else:
            services.payment_increment_authorization(merchant=merchant, payment_id=payment.id,
                                                     amount=15000)
    for minutes in (6, 20, 60):
        time_machine.move_to(T0 + timedelta(minutes=minutes), tick=False)
        jobs.janitor_job()
    assert list(calls.values()) == [1]
    payment.refresh_from_db()
    assert (payment.amount_captured, payment.amount_authorized) == (0, 10000)
    assert ReconciliationBreak.objects.filter(payment_id=payment.id,
                                              type="amount_mismatch").count() == 1
    assert not _capture_entries(payment)
    assert ledger_verify().ok


@pytest.mark.django_db
def test_a_partial_capture_the_provider_made_final_ends_the_authorization(
        api, merchant, make_payment, monkeypatch):
    """The provider took a `final_capture: false` capture as the last one (its answer says the
    charge is `captured`, the rest released): the payment ends captured, so its money can be
    refunded and nothing waits for a remainder the provider no longer holds."""
    payment = make_payment(10000, state="authorized")
    real = SandboxProvider.capture
    monkeypatch.setattr(SandboxProvider, "capture",
                        lambda self, request: real(self, replace(request, final=True)))
    done = api.post(f"/payments/{payment.id}/capture", {"amount": 3000, "final_capture": False})
    assert (done.json()["status"], done.json()["amount_captured"]) == ("captured", 3000)
    _books_agree(payment)
    assert api.post("/refunds", {"payment": payment.id, "amount": 3000}).status_code == 200
