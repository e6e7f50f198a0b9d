"""Attacks on the janitor's one check per payment (re-armed onto a newer attempt's schedule), on
void answers that contradict themselves, on the hourly lookup after a refused expiry void, and
on saving another merchant's vault token: a lying, late or failing-over provider, racing
janitors and merchants. Each test failed before its fix or is kept as a regression test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.errors import ClearhouseError, InvalidRequest
from ledger.verify import ledger_verify
from payments import services
from payments.models import PaymentMethod
from providers.base import Outcome, ProviderResult, ProviderStatus
from providers.cielo import CieloProvider
from providers.sandbox import SandboxProvider
from reconciliation import jobs
from reconciliation import services as recon_services
from reconciliation.janitor import first_check_at
from reconciliation.models import ReconciliationBreak, ReconciliationCheck
from tests.conftest import routing_rule
from tests.factories import merchant_with_key, pay
from tests.test_saved_payment_methods import charge, tokenize
from tests.test_three_d_secure import _answer_challenge, _challenged
from tests.threads import run_threads

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _janitor_at(time_machine, moment, django_capture_on_commit_callbacks):
    """One janitor pass at `moment`, with the authorization tasks it enqueues run here."""
    time_machine.move_to(moment, tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        return jobs.janitor_job()


def _check(payment_id: str) -> ReconciliationCheck:
    return ReconciliationCheck.objects.get(object_type="payment", object_id=payment_id)


def _unreachable(settings, code: str) -> dict:
    reachable = settings.PROVIDERS
    settings.PROVIDERS = {**reachable, code: {**reachable[code],
                                              "base_url": f"http://127.0.0.1:9/{code}"}}
    return reachable


# -- 1. the re-arm of a payment check ----------------------------------------------------------
@pytest.mark.django_db
def test_a_failover_on_the_last_slot_is_no_stuck_unresolved_break(
        simulator, merchant, settings, time_machine, django_capture_on_commit_callbacks):
    """The first attempt's task was lost and its provider could not be asked for five days. On
    the last slot it answers 'never saw it'; the janitor sends it, the provider refuses it
    before charging (503) and the payment fails over to the next provider, whose answer is lost.
    That attempt is seconds old: its schedule starts now. A `stuck_unresolved` break for it
    (the first attempt's schedule was spent) would send people after a payment nobody has
    asked about yet; the check must move to the new attempt's schedule instead."""
    routing_rule("cielo", "rede")
    time_machine.move_to(T0, tick=False)
    payment = pay(merchant, send=False)
    first = payment.attempts.get()
    reachable = _unreachable(settings, "cielo")
    for moment in (T0 + timedelta(minutes=10), T0 + timedelta(hours=1),
                   *(T0 + DAY * n for n in range(1, 5))):
        _janitor_at(time_machine, moment, django_capture_on_commit_callbacks)
    assert (_check(payment.id).checks, _check(payment.id).closed_at) == (6, None)
    settings.PROVIDERS = reachable
    simulator.control.configure("cielo", unavailable_rate=1.0, fault_operations=["authorize"])
    simulator.control.configure("rede", drop_rate=1.0, fault_operations=["authorize"])
    _janitor_at(time_machine, T0 + 5 * DAY, django_capture_on_commit_callbacks)
    attempts = list(payment.attempts.order_by("created_at").values_list("provider", "status"))
    assert attempts == [("cielo", "declined"), ("rede", "unknown")]
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()

    # The next run puts the check on the rede attempt's schedule; 5 minutes after it was sent,
    # its answer is asked for and applied.
    simulator.control.configure("rede", drop_rate=0.0)
    second = payment.attempts.exclude(pk=first.pk).get()
    _janitor_at(time_machine, T0 + 5 * DAY + timedelta(minutes=1),
                django_capture_on_commit_callbacks)
    check = _check(payment.id)
    assert (check.attempt_id, check.stuck_since, check.closed_at) == (
        second.id, second.created_at, None)
    _janitor_at(time_machine, second.created_at + timedelta(minutes=5),
                django_capture_on_commit_callbacks)
    payment.refresh_from_db()
    assert (payment.status, payment.provider) == ("captured", "rede")
    assert _check(payment.id).closed_at is not None
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()



@pytest.mark.django_db
def test_a_janitor_holding_the_lease_cannot_close_a_check_re_armed_under_it(
        simulator, merchant, time_machine):
    """Janitor A claims the payment's check; meanwhile the late task sends the attempt, which
    fails over to a provider whose answer is lost, and janitor B's discovery re-arms the check
    on that attempt's schedule. A's verdict was about the first attempt: recording it (closed,
    say) would leave the new attempt never asked about. The re-arm takes the lease back, so A's
    record is refused (held: kept as a regression test)."""
    routing_rule("cielo", "rede")
    time_machine.move_to(T0, tick=False)
    payment = pay(merchant, send=False)
    first = payment.attempts.get()
    grace = timedelta(seconds=60)
    time_machine.move_to(T0 + timedelta(minutes=2), tick=False)
    assert recon_services.checks_discover(first_check_at=first_check_at, now=T0 + timedelta(
        minutes=2), grace=grace, movements_unchanged_for=timedelta(minutes=5)) == 1
    (claimed,) = recon_services.checks_claim(owner="janitor-a", now=T0 + timedelta(minutes=2),
                                             lease=timedelta(minutes=5), limit=10)
    simulator.control.configure("cielo", unavailable_rate=1.0, fault_operations=["authorize"])
    simulator.control.configure("rede", drop_rate=1.0, fault_operations=["authorize"])
    services.payment_authorization_execute(attempt_id=first.id)  # the late task
    second = payment.attempts.exclude(pk=first.pk).get()
    assert second.status == "unknown"
    time_machine.move_to(T0 + timedelta(minutes=3), tick=False)
    assert recon_services.checks_discover(first_check_at=first_check_at, now=T0 + timedelta(
        minutes=3), grace=grace, movements_unchanged_for=timedelta(minutes=5)) == 1
    assert not recon_services.check_record(check_id=claimed.pk, owner="janitor-a",
                                           result="already_answered", closed=True,
                                           next_check_at=None, attempt_id=first.id)
    check = _check(payment.id)
    assert (check.attempt_id, check.closed_at, check.next_check_at, check.checks) == (
        second.id, None, second.created_at + timedelta(minutes=5), 0)


# -- 2. void answers that contradict themselves --------------------------------------------------
def _answers(monkeypatch, operation: str, answer: ProviderResult) -> None:
    monkeypatch.setattr(SandboxProvider, operation, lambda self, request: answer)


@pytest.mark.django_db
@pytest.mark.parametrize("partial, status, captured", [
    (0, ProviderStatus.VOIDED, 3000), (4000, ProviderStatus.CAPTURED, 10000)],
    ids=["voided_with_money_taken", "captured_more_than_ours"])
def test_a_lookup_of_a_lost_void_showing_money_we_did_not_take_is_a_break(
        merchant, make_payment, monkeypatch, partial, status, captured):
    """The void's answer was lost; the janitor's lookup finds the charge voided yet with 3000
    captured (we took nothing), or captured in full (10000) where our captures took 4000. The
    same answer given to the void itself is a status_mismatch break; asked later, it must not
    cancel the payment (or end it captured with 4000) and drop the provider's money from our
    books."""
    payment = make_payment(10000, state="authorized")
    if partial:
        services.payment_capture(merchant=merchant, payment_id=payment.id, amount=partial,
                                 final_capture=False)
    _answers(monkeypatch, "void", ProviderResult(outcome=Outcome.UNKNOWN, error_code="timeout"))
    with pytest.raises(ClearhouseError):
        services.payment_cancel(merchant=merchant, payment_id=payment.id)
    _answers(monkeypatch, "retrieve", ProviderResult(
        outcome=Outcome.APPROVED, status=status, amount=10000, currency="usd",
        provider_reference=payment.provider_reference, amount_captured=captured))
    services.payment_operation_lookup(attempt_id=payment.attempts.get(kind="void").id)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", partial)
    assert payment.attempts.get(kind="void").status == "unknown"
    assert ReconciliationBreak.objects.get(payment_id=payment.id).type == "status_mismatch"
    assert ledger_verify().ok


@pytest.mark.django_db
@pytest.mark.parametrize("status, captured", [
    (ProviderStatus.AUTHORIZED, None), (ProviderStatus.CAPTURED, 4200)],
    ids=["still_authorized", "captured"])
def test_a_challenge_void_approved_after_the_customer_s_approval_showing_money_held_is_a_break(
        simulator, merchant, settings, monkeypatch, status, captured):
    """The janitor voids a challenge the customer left; while the void is in flight the
    customer finishes it and the return applies the approval (a manual-capture payment, now
    authorized). The void then answers 'approved' yet shows the charge still authorized, or
    captured in full: canceling the payment would leave the customer's money held or taken
    with nothing on our books. As for any other void: a break, and the payment stays."""
    routing_rule("cielo")
    payment = _challenged(merchant, capture_method="manual")
    assert payment.status == "requires_action"
    authorize = payment.attempts.get()

    def void(self, request):
        _answer_challenge(payment, "approve")
        services.payment_authorization_lookup(attempt_id=authorize.id)  # the customer's return
        return ProviderResult(outcome=Outcome.APPROVED, status=status, amount=4200,
                              currency="brl", provider_reference=payment.provider_reference,
                              amount_captured=captured)

    monkeypatch.setattr(CieloProvider, "void", void)
    services.payment_authentications_expire(now=payment.action_expires_at + timedelta(
        minutes=1))
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("authorized", 0)
    assert ReconciliationBreak.objects.get(payment_id=payment.id).type == "status_mismatch"
    assert ledger_verify().ok


# -- 4. another merchant's saved token -----------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("code", ["cielo", "rede"])
def test_another_merchant_s_token_reads_as_unknown_at_every_vault(simulator, api, other_api,
                                                                   code):
    """The getnet case has its test; cielo's and rede's vaults answer an unknown token in
    their own ways, and another merchant's saved token must read exactly the same (held)."""
    token = tokenize(code)
    assert api.post("/payment_methods", {"provider": code, "token": token}).status_code == 200
    unknown = tokenize(code)
    unknown = unknown[:-4] + ("0000" if unknown[-4:] != "0000" else "1111")
    taken = other_api.post("/payment_methods", {"provider": code, "token": token})
    never = other_api.post("/payment_methods", {"provider": code, "token": unknown})
    assert taken.status_code == never.status_code == 400
    assert ({k: v for k, v in taken.json()["error"].items() if k != "request_id"}
            == {k: v for k, v in never.json()["error"].items() if k != "request_id"})
    assert PaymentMethod.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_merchants_saving_one_token_at_once_get_one_method_and_an_unknown_token(simulator):
    """Two merchants save the same token at the same moment: the unique constraint keeps one
    payment method; the other merchant reads 'token invalid', as for a token the vault does not
    know, never a 409 or a 500 naming the other's row (held)."""
    token = tokenize("getnet")
    merchants = [merchant_with_key()[0] for _ in range(2)]
    results, errors = run_threads(2, lambda i: services.payment_method_create(
        merchant=merchants[i], provider="getnet", token=token))
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], InvalidRequest), errors
    assert errors[0].code == "payment_method_token_invalid"
    assert PaymentMethod.objects.count() == 1


@pytest.mark.django_db
def test_enrolling_a_card_another_merchant_saved_there_never_attaches_its_token(simulator,
                                                                                 merchant):
    """The same card saved by two shops, at different acquirers: the acquirer vaults keep one
    token per card, so enrolling the second shop's card at the first shop's acquirer answers
    the first shop's token. It is never attached to the second shop's method (one method per
    acquirer token), and the payment neither crashes (an IntegrityError the janitor would hit
    on every run for five days) nor stays stuck: the enrolment is refused and the payment
    fails over to the acquirer where the card is saved."""
    routing_rule("cielo", "getnet")
    services.payment_method_create(merchant=merchant, provider="cielo", token=tokenize("cielo"))
    other = merchant_with_key()[0]
    theirs = services.payment_method_create(merchant=other, provider="getnet",
                                            token=tokenize("getnet"))
    payment = charge(other, theirs.id)
    assert (payment.status, payment.provider) == ("captured", "getnet")
    assert list(theirs.tokens.values_list("provider", flat=True)) == ["getnet"]


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["cielo", "rede", "getnet"])
def test_another_merchant_s_vault_token_cannot_be_charged_as_a_raw_payment_method(
        simulator, api, other_api, code):
    """Refused as a saved method, another merchant's vault token passed straight to a payment
    as its payment_method would reach the acquirer as the card: only a saved method (pm_…) or a
    test alias is accepted, so it is a 400 and nothing is charged (held)."""
    token = tokenize(code)
    assert api.post("/payment_methods", {"provider": code, "token": token}).status_code == 200
    routing_rule(code)
    charged = len(simulator.control.charges(provider=code))
    refused = other_api.post("/payments", {"amount": 2500, "currency": "brl",
                                           "payment_method": token, "confirm": True})
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["param"] == "payment_method"
    assert len(simulator.control.charges(provider=code)) == charged


@pytest.mark.django_db
def test_a_retry_opened_on_the_first_attempt_s_last_slot_is_no_stuck_unresolved_break(
        simulator, merchant, settings, time_machine, django_capture_on_commit_callbacks):
    """The first try's answer is lost and its provider cannot be asked for five days; an hour
    before the last slot a lookup gets through (a soft decline) and the retry is scheduled an
    hour later. The janitor's run on the last slot opens the retry (its task queued, not yet
    sent) and then processes the check: the retry is in flight, seconds old. A stuck_unresolved
    break there is false; the retry gets its own schedule."""
    settings.PAYMENT_RETRY_DELAYS = [3600]
    routing_rule("cielo")
    method = services.payment_method_create(merchant=merchant, provider="cielo",
                                            token=tokenize("cielo", "4000000000009995"))
    time_machine.move_to(T0, tick=False)
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["authorize"])
    payment = charge(merchant, method.id, off_session=True)
    first = payment.attempts.get()
    assert first.status == "unknown"
    simulator.control.configure("cielo", drop_rate=0.0)
    reachable = _unreachable(settings, "cielo")
    for moment in (T0 + timedelta(minutes=5), T0 + timedelta(hours=1),
                   *(T0 + DAY * n for n in range(1, 5))):
        _janitor_at(time_machine, moment, django_capture_on_commit_callbacks)
    assert (_check(payment.id).checks, _check(payment.id).closed_at) == (6, None)
    settings.PROVIDERS = reachable
    time_machine.move_to(first.created_at + 5 * DAY - timedelta(hours=1), tick=False)
    services.payment_authorization_lookup(attempt_id=first.id)
    payment.refresh_from_db()
    assert payment.next_retry_at == first.created_at + 5 * DAY
    time_machine.move_to(first.created_at + 5 * DAY, tick=False)
    with django_capture_on_commit_callbacks(execute=False):  # the worker has not run it yet
        jobs.janitor_job()
    retry = payment.attempts.exclude(pk=first.pk).get()
    assert retry.status == "requested"
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
    # Its task lost, the retry is re-armed onto its own schedule and sent by the next run.
    _janitor_at(time_machine, retry.created_at + timedelta(minutes=2),
                django_capture_on_commit_callbacks)
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == ("failed", "insufficient_funds")
    check = _check(payment.id)
    assert (check.attempt_id, check.stuck_since) == (retry.id, retry.created_at)
    assert not ReconciliationBreak.objects.filter(payment_id=payment.id).exists()
