"""Attacks on the void of an abandoned 3-D Secure challenge (issue 18): janitor runs racing each
other, the customer's return and the provider's notices, and a provider whose void answer
contradicts what it said before. One void at the provider, one `payment.failed`, and a conflict
between provider facts is kept as a break, never silently dropped."""

import threading
from datetime import timedelta

import httpx
import pytest
from django.db import transaction
from django.test import Client

from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment, PaymentAttempt, PaymentStatus
from providers.base import Outcome, ProviderResult
from reconciliation.janitor import _check_operation
from reconciliation.models import ReconciliationBreak
from tests.conftest import merchant_with_key, routing_rule
from tests.test_three_d_secure import _challenged, _events, _notice
from tests.test_three_d_secure_void import _attempts, _charge, _lapsed, _return_path
from tests.threads import run_threads

pytestmark = pytest.mark.django_db


def _around(monkeypatch, operation: str, *, before=None, after=None) -> list:
    """Run `before(request)` / `after(request, result)` around every `operation` the services
    send to a provider from now on (each hook may return a replacement answer)."""
    sent = []
    real = services.provider_call

    def call(provider, called, request, **kwargs):
        if called != operation:
            return real(provider, called, request, **kwargs)
        sent.append(request)
        replaced = before(request) if before is not None else None
        result = replaced if replaced is not None else real(provider, called, request, **kwargs)
        changed = after(request, result) if after is not None else None
        return changed if changed is not None else result

    monkeypatch.setattr(services, "provider_call", call)
    return sent


def _failed_once(payment: Payment) -> None:
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")
    assert _events(payment).count("payment.failed") == 1
    assert _attempts(payment) == [("authorize", "declined"), ("void", "approved")]


# -- janitor runs at once -----------------------------------------------------------------------
def test_a_run_that_finds_the_void_opened_by_another_sends_that_one_and_does_not_raise(
        simulator, merchant, monkeypatch):
    """Another janitor run opened the void (and died before sending it) between this run's
    lookup and its lock: this run sends that void with its key, never a second attempt, and
    never raises out of the batch."""
    routing_rule("cielo")
    payment = _challenged(merchant)
    authorize = payment.attempts.get(kind="authorize")

    def other_run_opens_the_void(request, result):
        if PaymentAttempt.objects.filter(payment=payment, kind="void").exists():
            return
        with transaction.atomic():
            locked, attempt = services._lock_attempt(authorize.id)
            services._open_attempt(locked, "void", attempt.amount)

    _around(monkeypatch, "retrieve", after=other_run_opens_the_void)
    voids = _around(monkeypatch, "void")
    assert services.payment_authentications_expire(now=_lapsed(payment)) == 1
    _failed_once(payment)
    assert len(voids) == 1
    assert _charge(simulator, payment)["voids"] == 1


@pytest.mark.django_db(transaction=True)
def test_two_janitor_runs_at_once_void_once_and_fail_the_payment_once(simulator, merchant,
                                                                      monkeypatch):
    routing_rule("rede")
    payment = _challenged(merchant)
    both_asked = threading.Barrier(2)

    def wait_for_the_other(request, result):
        both_asked.wait(30)  # both lookups saw the challenge open before either voids

    _around(monkeypatch, "retrieve", after=wait_for_the_other)
    later = _lapsed(payment)
    results, errors = run_threads(2, lambda i: services.payment_authentications_expire(now=later))
    assert errors == []
    assert sorted(results) in ([0, 1], [1, 1])  # a re-send of the same void may count it too
    _failed_once(payment)
    charge = _charge(simulator, payment)
    assert (charge["status"], charge["voids"], charge["is_charged"]) == ("voided", 1, False)


# -- the provider's void answer against what it said before --------------------------------------
def test_a_void_confirmed_after_an_approval_notice_captured_the_payment_opens_a_break(
        simulator, merchant, monkeypatch):
    """While our void is in flight the provider notifies a capture, then answers the void
    `voided`: both cannot be true. The payment stays captured (never backwards), and the
    conflict goes to people as a break instead of being dropped."""
    routing_rule("cielo")
    payment = _challenged(merchant)

    def captured_meanwhile(request):
        assert _notice(payment, "payment.captured", amount=4200, currency="brl") == "applied"

    _around(monkeypatch, "void", before=captured_meanwhile)
    assert services.payment_authentications_expire(now=_lapsed(payment)) == 0
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4200)
    assert "payment.failed" not in _events(payment)
    breaks = ReconciliationBreak.objects.filter(payment_id=payment.id)
    assert breaks.count() == 1
    assert ledger_verify().ok


def test_a_void_confirmed_after_an_authorization_notice_cancels_the_payment(
        simulator, merchant, monkeypatch):
    """Manual capture: the provider notifies the authorization, then confirms our void of the
    charge. The authorization is gone there, so it is gone here: canceled, never left
    `authorized` for a capture the provider would refuse."""
    routing_rule("getnet")
    payment = _challenged(merchant, capture_method="manual")

    def authorized_meanwhile(request):
        assert _notice(payment, "payment.authorized", amount=4200, currency="brl") == "applied"

    _around(monkeypatch, "void", before=authorized_meanwhile)
    services.payment_authentications_expire(now=_lapsed(payment))
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("canceled", 0)
    assert _events(payment)[-2:] == ["payment.authorized", "payment.canceled"]
    assert _attempts(payment) == [("authorize", "approved"), ("void", "approved")]
    assert _charge(simulator, payment)["is_charged"] is False


def test_a_void_answered_for_another_charge_does_not_end_ours(simulator, merchant, monkeypatch):
    """A lying provider answers our void `voided` under another charge's reference: that is no
    word on our charge. The payment keeps waiting (a later run asks again) and the void is not
    recorded as done."""
    routing_rule("cielo")
    payment = _challenged(merchant)
    other = ProviderResult(outcome=Outcome.APPROVED, provider_reference="someone-elses-charge")
    _around(monkeypatch, "void", before=lambda request: other)
    assert services.payment_authentications_expire(now=_lapsed(payment)) == 0
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    assert "payment.failed" not in _events(payment)


# -- the customer's return racing the janitor -----------------------------------------------------
@pytest.mark.parametrize("code", ["cielo", "rede", "getnet"])
def test_a_return_while_the_void_is_in_flight_ends_the_payment_as_the_janitor_would(
        simulator, merchant, monkeypatch, code):
    """The provider has voided the challenge; before its answer reaches us the customer's
    browser comes back and the return asks the provider, which shows the charge voided. The
    end state is the same as by the janitor's path: failed `authentication_abandoned`, the void
    recorded once, one `payment.failed` (convergence: the path does not change the result)."""
    routing_rule(code)
    payment = _challenged(merchant)
    path = _return_path(payment)

    def customer_back(request, result):
        assert Client().get(path).status_code == 302

    _around(monkeypatch, "void", after=customer_back)
    services.payment_authentications_expire(now=_lapsed(payment))
    _failed_once(payment)
    assert _charge(simulator, payment)["voids"] == 1


def test_a_voided_notice_while_the_void_is_unanswered_ends_the_payment_abandoned(
        simulator, merchant, monkeypatch):
    """Our void's answer was lost; the provider's `payment.voided` notice arrives before the
    next run. It is our void's answer: the payment fails `authentication_abandoned` once, and
    the next run changes nothing and sends nothing."""
    routing_rule("cielo")
    payment = _challenged(merchant)
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["void"])
    later = _lapsed(payment)
    assert services.payment_authentications_expire(now=later) == 0
    simulator.control.configure("cielo", drop_rate=0.0)
    assert _notice(payment, "payment.voided") == "applied"
    assert _notice(payment, "payment.voided") == "applied"  # a duplicate changes nothing
    _failed_once(payment)
    voids = _around(monkeypatch, "void")
    assert services.payment_authentications_expire(now=later) == 0
    assert voids == []
    _failed_once(payment)


def test_a_refused_void_of_a_challenge_still_open_is_not_sent_again_each_run(
        simulator, merchant, monkeypatch):
    """The provider refuses our void yet its lookup keeps showing the challenge open: each run
    opened another void with a new provider key, forever. One void is sent; the conflict goes
    to people as one break, and the payment keeps waiting (never failed on a refused void)."""
    routing_rule("cielo")
    payment = _challenged(merchant)
    refused = ProviderResult(outcome=Outcome.DECLINED, error_code="invalid_state",
                             provider_reference=payment.provider_reference)
    sent = _around(monkeypatch, "void", before=lambda request: refused)
    for _ in range(3):
        assert services.payment_authentications_expire(now=_lapsed(payment)) == 0
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    assert _attempts(payment) == [("authorize", "unknown"), ("void", "declined")]
    assert len(sent) == 1
    assert ReconciliationBreak.objects.filter(payment_id=payment.id).count() == 1


def test_a_void_refused_while_the_provider_is_down_is_sent_again_and_ends_the_challenge(
        simulator, merchant, monkeypatch):
    """A retryable refusal (the provider down for a moment: nothing done there) is not the
    provider refusing to void: the next run sends another void, which ends the challenge. Since
    768c1a4 it was taken as a definite refusal: a break, never a void again, the challenge left
    open at the provider for the customer to pass (found by the convergence model)."""
    routing_rule("cielo")
    payment = _challenged(merchant)
    down = ProviderResult(outcome=Outcome.DECLINED, error_code="provider_unavailable",
                          retryable=True)
    calls = {"n": 0}

    def first_refused(request):
        calls["n"] += 1
        return down if calls["n"] == 1 else None

    sent = _around(monkeypatch, "void", before=first_refused)
    assert services.payment_authentications_expire(now=_lapsed(payment)) == 0
    assert services.payment_authentications_expire(now=_lapsed(payment)) == 1
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "authentication_abandoned")
    assert _attempts(payment)[-2:] == [("void", "declined"), ("void", "approved")]
    assert len(sent) == 2 and _charge(simulator, payment)["voids"] == 1
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()


def test_voids_refused_while_the_provider_stays_down_stop_at_their_bound(
        simulator, merchant, monkeypatch):
    routing_rule("cielo")
    payment = _challenged(merchant)
    down = ProviderResult(outcome=Outcome.DECLINED, error_code="provider_unavailable",
                          retryable=True)
    sent = _around(monkeypatch, "void", before=lambda request: down)
    for _ in range(services.VOID_TRIES + 3):
        assert services.payment_authentications_expire(now=_lapsed(payment)) == 0
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    assert len(sent) == services.VOID_TRIES
    assert ReconciliationBreak.objects.filter(payment_id=payment.id).count() == 1


def test_a_void_never_sent_does_not_cancel_a_challenge_the_customer_completed(
        simulator, merchant):
    """A run opened the void and died before sending it; the customer then completed the
    challenge and the approval reached us (manual capture: authorized). The challenge is over:
    its void must not be sent later by the operation checks, canceling a payment the customer
    approved, nor block the merchant's capture."""
    routing_rule("cielo")
    payment = _challenged(merchant, capture_method="manual")
    authorize = payment.attempts.get(kind="authorize")
    with transaction.atomic():
        locked, attempt = services._lock_attempt(authorize.id)
        void = services._open_attempt(locked, "void", attempt.amount)
    assert Client().get(_return_path(payment)).status_code == 302  # nothing yet
    httpx.post(payment.next_action_url, data={"action": "approve"}, timeout=10)
    assert Client().get(_return_path(payment)).status_code == 302
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.AUTHORIZED
    _check_operation(void.id, timedelta(0))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.AUTHORIZED
    assert _charge(simulator, payment)["voids"] == 0
    services.payment_capture(merchant=merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 4200)


# -- what held ------------------------------------------------------------------------------------
def test_a_crash_after_opening_the_void_resends_it_with_its_key_on_the_next_run(
        simulator, merchant, monkeypatch):
    routing_rule("getnet")
    payment = _challenged(merchant)
    authorize = payment.attempts.get(kind="authorize")
    with transaction.atomic():  # what a run that died right after opening its void left
        locked, attempt = services._lock_attempt(authorize.id)
        opened = services._open_attempt(locked, "void", attempt.amount)
    voids = _around(monkeypatch, "void")
    assert services.payment_authentications_expire(now=_lapsed(payment)) == 1
    _failed_once(payment)
    assert [request.idempotency_key for request in voids] == [opened.provider_idempotency_key]
    assert _charge(simulator, payment)["voids"] == 1


def test_a_return_token_of_one_payment_opens_no_other_and_a_bad_token_asks_nothing(
        simulator, merchant, monkeypatch):
    routing_rule("cielo")
    mine, theirs = _challenged(merchant), _challenged(merchant_with_key()[0])
    asked = _around(monkeypatch, "retrieve")
    mine_id = mine.attempts.get(kind="authorize").id
    theirs_id = theirs.attempts.get(kind="authorize").id
    token = services.authentication_token(mine_id)
    for path in (f"/payments/authentication/{theirs_id}/{token}",
                 f"/payments/authentication/{mine_id}/{token[:-1]}",
                 f"/payments/authentication/{mine_id}/{token.upper()}",
                 f"/payments/authentication/{mine.id}/{services.authentication_token(mine.id)}"):
        answer = Client().get(path)
        assert answer.status_code == 404 and b"Traceback" not in answer.content
    assert asked == []


@pytest.mark.parametrize("attempt_id", ["att%00x", "%00", "a" * 3000, "%F0%9F%92%A9"])
def test_a_return_address_with_a_garbled_attempt_id_is_404_never_500(attempt_id, monkeypatch):
    """A NUL in the attempt id reached PostgreSQL (which refuses NUL in text) and answered 500;
    an address we never signed is refused before any query."""
    asked = _around(monkeypatch, "retrieve")
    answer = Client(raise_request_exception=False).get(
        f"/payments/authentication/{attempt_id}/{'0' * 64}")
    assert answer.status_code == 404
    assert answer.content == b"Unknown or expired authentication link."
    assert asked == []

