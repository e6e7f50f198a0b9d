"""Attacks on the janitor's expiry of authorizations (payment_authorizations_expire): a provider
that refuses voids it did, lies in its lookups or captures without us, janitor runs and merchant
captures racing it, and stuck payments crowding the batch. The books must always agree."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import ClearhouseError as ApiError
from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment
from providers.base import Outcome, ProviderResult, ProviderStatus
from providers.models import SandboxCharge
from providers.sandbox import SandboxProvider
from reconciliation.models import ReconciliationBreak
from tests.conftest import assert_error, routing_rule
from tests.threads import run_threads
from webhooks.models import Event

_INVALID_STATE = ProviderResult(outcome=Outcome.DECLINED, status=ProviderStatus.DECLINED,
                                error_code="invalid_state", error_message="refused")


def _later(payment: Payment):
    return payment.authorization_expires_at + timedelta(seconds=1)


def _events(payment: Payment, type: str) -> int:
    return Event.objects.filter(object_id=payment.id, type=type).count()


def _refuse_voids(monkeypatch, answer: ProviderResult = _INVALID_STATE) -> list[str]:
    keys: list[str] = []

    def refusing(self, request):
        keys.append(request.idempotency_key)
        return answer

    monkeypatch.setattr(SandboxProvider, "void", refusing)
    return keys


def _lookup_says(monkeypatch, payment: Payment, **fields) -> None:
    answer = ProviderResult(**{"outcome": Outcome.APPROVED,
                               "provider_reference": payment.provider_reference,
                               "amount": payment.amount_authorized, "currency": payment.currency,
                               **fields})
    monkeypatch.setattr(SandboxProvider, "retrieve", lambda self, request: answer)


def _refused_for_people(payment: Payment) -> None:
    payment.refresh_from_db()
    assert payment.status == "authorized"
    assert not _events(payment, "payment.canceled")
    assert list(ReconciliationBreak.objects.filter(payment_id=payment.id)
                .values_list("key", flat=True)) == [
        f"authorization_void_refused:{payment.provider}:{payment.id}"]
    assert ledger_verify().ok


# -- a provider that did what it refused --------------------------------------------------------
@pytest.mark.django_db
def test_a_void_refused_as_unavailable_yet_done_ends_canceled_once(make_payment, monkeypatch):
    """The provider voids, answers provider_unavailable; the next run's void (a new key) is
    refused as the charge is no longer held; its lookup shows it voided: canceled once."""
    payment = make_payment(10000, state="authorized")
    real, keys = SandboxProvider.void, []

    def voids_then_lies(self, request):
        keys.append(request.idempotency_key)
        answer = real(self, request)
        if len(keys) == 1:
            return ProviderResult(outcome=Outcome.DECLINED, error_code="provider_unavailable")
        return answer

    monkeypatch.setattr(SandboxProvider, "void", voids_then_lies)
    assert services.payment_authorizations_expire(now=_later(payment)) == 0
    assert services.payment_authorizations_expire(now=_later(payment)) == 1
    assert services.payment_authorizations_expire(now=_later(payment)) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.cancellation_reason) == ("canceled", "expired")
    assert len(set(keys)) == len(keys) == 2
    assert _events(payment, "payment.canceled") == 1
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    assert SandboxCharge.objects.get(pk=payment.provider_reference).status == "voided"
    assert ledger_verify().ok


# -- a provider whose lookup lies ---------------------------------------------------------------
@pytest.mark.django_db
def test_a_lookup_saying_voided_for_another_charge_is_a_break(make_payment, monkeypatch):
    payment = make_payment(10000, state="authorized")
    _refuse_voids(monkeypatch)
    _lookup_says(monkeypatch, payment, status=ProviderStatus.VOIDED,
                 provider_reference="sbx_someone_else")
    for _ in range(2):
        assert services.payment_authorizations_expire(now=_later(payment)) == 0
    _refused_for_people(payment)


@pytest.mark.django_db
def test_a_lookup_saying_voided_yet_captured_money_is_a_break_not_a_cancel(make_payment,
                                                                           monkeypatch):
    """The provider took 3000 of the charge without us, then shows it 'voided': canceling
    would lose that money from our books."""
    payment = make_payment(10000, state="authorized")
    _refuse_voids(monkeypatch)
    _lookup_says(monkeypatch, payment, status=ProviderStatus.VOIDED, amount_captured=3000)
    assert services.payment_authorizations_expire(now=_later(payment)) == 0
    _refused_for_people(payment)


@pytest.mark.django_db
def test_a_failed_lookup_saying_voided_is_not_taken_as_voided(make_payment, monkeypatch):
    payment = make_payment(10000, state="authorized")
    _refuse_voids(monkeypatch)
    _lookup_says(monkeypatch, payment, outcome=Outcome.DECLINED, status=ProviderStatus.VOIDED,
                 error_code="not_found")
    assert services.payment_authorizations_expire(now=_later(payment)) == 0
    _refused_for_people(payment)


@pytest.mark.django_db
def test_a_charge_captured_without_us_after_a_refused_void_is_a_break(make_payment,
                                                                      monkeypatch):
    payment = make_payment(10000, state="authorized")
    keys = _refuse_voids(monkeypatch)
    SandboxCharge.objects.filter(pk=payment.provider_reference).update(
        status="captured", captured=10000)
    for _ in range(3):
        assert services.payment_authorizations_expire(now=_later(payment)) == 0
    _refused_for_people(payment)
    assert len(keys) == 1 and payment.amount_captured == 0


# -- partial captures ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_partially_captured_charge_whose_rest_lapsed_ends_captured(merchant, make_payment):
    """The provider let the rest of a partially captured authorization lapse (the charge is
    captured with our 4000): the refused void is answered by that lookup and the payment ends
    captured with what it captured, never authorized forever behind a break."""
    payment = make_payment(10000, state="authorized")
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=4000,
                             final_capture=False)
    SandboxCharge.objects.filter(pk=payment.provider_reference).update(status="captured")
    assert services.payment_authorizations_expire(now=_later(payment)) == 1
    assert services.payment_authorizations_expire(now=_later(payment)) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured, payment.cancellation_reason) == (
        "captured", 4000, "")
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    assert _events(payment, "payment.captured") == 1 and not _events(payment, "payment.canceled")
    assert ledger_verify().ok


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "captured"), [
    (ProviderStatus.CAPTURED, 6000), (ProviderStatus.CAPTURED, None),
    (ProviderStatus.VOIDED, 0), (ProviderStatus.VOIDED, 4000)])
def test_a_partially_captured_charge_shown_otherwise_than_captured_with_ours_is_a_break(
        merchant, make_payment, monkeypatch, status, captured):
    payment = make_payment(10000, state="authorized")
    services.payment_capture(merchant=merchant, payment_id=payment.id, amount=4000,
                             final_capture=False)
    _refuse_voids(monkeypatch)
    _lookup_says(monkeypatch, payment, status=status, amount_captured=captured)
    assert services.payment_authorizations_expire(now=_later(payment)) == 0
    _refused_for_people(payment)
    assert payment.amount_captured == 4000


# -- concurrency --------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_janitor_runs_at_once_void_once_and_cancel_once(make_payment):
    payment = make_payment(10000, state="authorized")
    results, errors = run_threads(
        2, lambda i: services.payment_authorizations_expire(now=_later(payment)))
    assert not errors and sorted(results) == [0, 1]
    payment.refresh_from_db()
    assert payment.status == "canceled"
    assert list(payment.attempts.filter(kind="void").values_list("status", flat=True)) == [
        "approved"]
    assert _events(payment, "payment.canceled") == 1
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_two_janitor_runs_answered_by_one_lookup_cancel_once(make_payment, monkeypatch):
    payment = make_payment(10000, state="authorized")
    SandboxCharge.objects.filter(pk=payment.provider_reference).update(status="voided")
    results, errors = run_threads(
        2, lambda i: services.payment_authorizations_expire(now=_later(payment)))
    assert not errors and sorted(results) in ([0, 1], [1, 1])
    payment.refresh_from_db()
    assert (payment.status, payment.cancellation_reason) == ("canceled", "expired")
    assert payment.attempts.filter(kind="void", status="approved").count() == 1
    assert _events(payment, "payment.canceled") == 1
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_capture_racing_the_expiry_void_leaves_one_of_them(merchant, make_payment):
    payment = make_payment(10000, state="authorized")

    def work(i: int):
        if i == 0:
            return services.payment_authorizations_expire(now=_later(payment))
        return services.payment_capture(merchant=merchant, payment_id=payment.id)

    _, errors = run_threads(2, work)
    assert all(isinstance(e, ApiError) for e in errors), errors
    payment.refresh_from_db()
    charge = SandboxCharge.objects.get(pk=payment.provider_reference)
    assert payment.status in ("canceled", "captured")
    assert charge.status == payment.status.replace("canceled", "voided")
    assert payment.amount_captured == charge.captured
    assert ledger_verify().ok


@pytest.mark.django_db
def test_a_capture_after_expiry_is_409_and_the_janitor_still_voids(api, make_payment,
                                                                   time_machine):
    payment = make_payment(10000, state="authorized")
    time_machine.move_to(_later(payment), tick=False)
    assert_error(api.post(f"/payments/{payment.id}/capture", {"amount": 100}), 409,
                 code="payment_unexpected_state")
    assert services.payment_authorizations_expire() == 1
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("canceled", 0)
    assert not payment.attempts.filter(kind="capture").exists()


# -- starvation ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_stuck_payments_do_not_starve_new_expiries(make_payment, monkeypatch):
    """More payments the provider will not release than one run takes (3 for a limit of 2,
    as 150 for 100), each handled since: a payment expiring later, and touched after them
    all, is voided within the runs it takes to go once through them."""
    stuck = [make_payment(10000, state="authorized") for _ in range(3)]
    fresh = make_payment(10000, state="authorized")
    later = _later(fresh)
    refused = {p.provider_reference for p in stuck}
    real = SandboxProvider.void
    monkeypatch.setattr(SandboxProvider, "void", lambda self, request: (
        _INVALID_STATE if request.provider_reference in refused else real(self, request)))
    Payment.objects.filter(pk=fresh.pk).update(authorization_expires_at=later + timedelta(days=1))
    for _ in range(3):
        assert services.payment_authorizations_expire(now=later, limit=2) == 0
    assert ReconciliationBreak.objects.filter(
        payment_id__in=[p.id for p in stuck]).count() == 3
    Payment.objects.filter(pk=fresh.pk).update(authorization_expires_at=later,
                                               updated_at=timezone.now())
    released = [services.payment_authorizations_expire(now=later, limit=2) for _ in range(2)]
    assert released == [0, 1]
    fresh.refresh_from_db()
    assert fresh.status == "canceled"
    assert all(Payment.objects.get(pk=p.pk).status == "authorized" for p in stuck)


@pytest.mark.django_db
def test_a_lookup_saying_voided_for_another_order_is_a_break(make_payment, monkeypatch):
    """No reference in the answer, and the order it names is another payment of ours."""
    payment, other = make_payment(10000, state="authorized"), make_payment(10000)
    _refuse_voids(monkeypatch)
    _lookup_says(monkeypatch, payment, status=ProviderStatus.VOIDED, provider_reference="",
                 merchant_reference=other.id)
    assert services.payment_authorizations_expire(now=_later(payment)) == 0
    _refused_for_people(payment)


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["cielo", "rede", "getnet"])
def test_a_real_adapter_s_lookup_of_a_voided_charge_releases_it(simulator, merchant,
                                                                monkeypatch, code):
    """The provider voided yet refused (invalid_state): its own lookup, read by the adapter,
    shows the charge voided for our order, and the payment ends canceled/expired once."""
    routing_rule(code)
    payment = services.payment_create(merchant=merchant, amount=5000, currency="brl",
                                      payment_method="pm_card_visa", capture_method="manual",
                                      confirm=True)
    services.payment_authorization_execute(attempt_id=payment.attempts.get().id)
    payment = Payment.objects.get(pk=payment.pk)
    real = services.provider_call

    def voids_then_refuses(provider, operation, request, **kwargs):
        answer = real(provider, operation, request, **kwargs)
        if operation != "void":
            return answer
        return ProviderResult(outcome=Outcome.DECLINED, error_code="invalid_state",
                              provider_reference=payment.provider_reference)

    monkeypatch.setattr(services, "provider_call", voids_then_refuses)
    assert services.payment_authorizations_expire(now=_later(payment)) == 1
    payment.refresh_from_db()
    assert (payment.status, payment.cancellation_reason) == ("canceled", "expired")
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    assert _events(payment, "payment.canceled") == 1
