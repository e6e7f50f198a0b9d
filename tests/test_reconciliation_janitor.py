"""The janitor: lost answers become captures through the normal path, never-sent attempts are
sent with their own key (authorizations, and captures and voids of authorized payments), the
5 min / 1 h / daily ×5 schedule ends in a break, concurrent and crashed janitors process each
stuck payment exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from core.errors import ProviderError, StateError
from ledger.models import JournalEntry
from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment, PaymentAttempt
from providers.base import CaptureRequest, Outcome
from providers.registry import get_provider
from reconciliation import janitor, jobs
from reconciliation import services as recon_services
from reconciliation.models import BreakType, JobRun, ReconciliationBreak, ReconciliationCheck
from tests.conftest import routing_rule
from tests.factories import pay
from webhooks.models import Event, WebhookDelivery
from webhooks.services import endpoint_create

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _pay(merchant, card="pm_card_visa", amount=1050, send=True, capture_method="automatic"):
    return pay(merchant, card=card, amount=amount, send=send, capture_method=capture_method)


def _captures(payment_id: str) -> int:
    return JournalEntry.objects.filter(reference_type="payment", reference_id=payment_id,
                                       kind="capture").count()


def _check(payment_id: str) -> ReconciliationCheck:
    return ReconciliationCheck.objects.get(object_type="payment", object_id=payment_id)


def _events(payment_id: str, type: str) -> int:
    return Event.objects.filter(object_id=payment_id, type=type).count()


def _operation_stuck(monkeypatch, merchant, operation: str, *, sent: bool) -> Payment:
    """A manual-capture payment, authorized, whose capture or cancel (`operation`) died
    mid-request: after the provider applied it and before we recorded it (`sent`), or before
    the provider was called at all. Its attempt is left `requested`."""
    payment = _pay(merchant, capture_method="manual")
    assert payment.status == "authorized"
    real_call = services.provider_call

    def killed_before_the_call(provider, name, request, **options):
        if name == operation:
            raise RuntimeError("worker killed before the call")
        return real_call(provider, name, request, **options)

    def killed_after_the_call(**kwargs):
        raise RuntimeError("database lost after the call")

    with monkeypatch.context() as patch:
        if sent:
            patch.setattr(services, f"payment_{operation}_record", killed_after_the_call)
        else:
            patch.setattr(services, "provider_call", killed_before_the_call)
        with pytest.raises(RuntimeError):
            if operation == "capture":
                services.payment_capture(merchant=merchant, payment_id=payment.id)
            else:
                services.payment_cancel(merchant=merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.status == "authorized"
    assert payment.attempts.get(kind=operation).status == "requested"
    return payment


@pytest.mark.django_db
def test_a_charge_whose_answer_was_lost_is_captured_once_by_the_janitor(
    simulator, merchant, settings, time_machine
):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    endpoint_create(merchant=merchant, url="http://127.0.0.1:9/hook", enabled_events=["*"])
    routing_rule("getnet")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, card="pm_card_drop")  # charged, then the connection was reset
    assert payment.status == "authorization_requested"
    assert payment.attempts.get().status == "unknown"

    early = jobs.janitor_job()  # found, but the first lookup is due 5 minutes after the call
    assert (early.examined, _check(payment.id).next_check_at) == (0, T0 + timedelta(minutes=5))

    time_machine.move_to(T0 + timedelta(minutes=5), tick=False)
    run = jobs.janitor_job()
    payment.refresh_from_db()
    assert (run.examined, run.fixed, run.broken, run.error) == (1, 1, 0, "")
    assert run.finished_at is not None and run.host
    assert payment.status == "captured" and payment.amount_captured == 1050
    assert payment.provider_reference
    assert _captures(payment.id) == 1
    events = Event.objects.filter(object_id=payment.id, type="payment.captured")
    assert events.count() == 1
    assert WebhookDelivery.objects.filter(event__in=events).count() == 1  # the outbox row
    assert len(simulator.control.charges(order_id=payment.id)) == 1
    assert PaymentAttempt.objects.filter(payment=payment).count() == 1  # nothing re-sent
    assert _check(payment.id).closed_at is not None

    again = jobs.janitor_job()
    assert (again.examined, _captures(payment.id), events.count()) == (0, 1, 1)


@pytest.mark.django_db
def test_a_requested_attempt_never_sent_is_sent_with_its_own_key_after_the_grace_period(
    simulator, merchant, time_machine
):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, send=False)  # the task was never enqueued
    attempt = payment.attempts.get()
    assert attempt.status == "requested"

    time_machine.move_to(T0 + timedelta(seconds=30), tick=False)
    assert jobs.janitor_job().examined == 0  # younger than the grace period: maybe queued

    time_machine.move_to(T0 + timedelta(seconds=61), tick=False)
    run = jobs.janitor_job()
    payment.refresh_from_db()
    assert (run.examined, run.fixed) == (1, 1)
    assert run.details["answers"] == {"sent:captured": 1}
    assert payment.status == "captured" and _captures(payment.id) == 1
    assert list(payment.attempts.values_list("id", "status")) == [(attempt.id, "approved")]
    assert len(simulator.control.charges(order_id=payment.id)) == 1

    # The lost task turning up late sends nothing: the attempt has its answer.
    services.payment_authorization_execute(attempt_id=attempt.id)
    assert len(simulator.control.charges(order_id=payment.id)) == 1


@pytest.mark.django_db
def test_lookups_at_5_min_1_h_then_daily_for_5_days_then_a_break(
    simulator, merchant, settings, time_machine
):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, card="pm_card_drop")
    # The provider stays unreachable for the whole week: every lookup is unanswered.
    settings.PROVIDERS = {**settings.PROVIDERS,
                          "cielo": {**settings.PROVIDERS["cielo"],
                                    "base_url": "http://127.0.0.1:9/cielo"}}
    jobs.janitor_job()
    expected_slots = [timedelta(minutes=5), timedelta(hours=1),
                      *(timedelta(days=n) for n in range(1, 6))]
    assert tuple(expected_slots) == janitor.SCHEDULE
    for number, slot in enumerate(expected_slots, start=1):
        time_machine.move_to(T0 + slot - timedelta(seconds=1), tick=False)
        assert jobs.janitor_job().examined == 0, f"check {number} ran early"
        time_machine.move_to(T0 + slot, tick=False)
        run = jobs.janitor_job()
        check = _check(payment.id)
        assert (run.examined, check.checks) == (1, number)
        if number < len(expected_slots):
            assert run.broken == 0
            assert check.next_check_at == T0 + expected_slots[number]
            assert check.closed_at is None
    assert run.broken == 1 and check.closed_at is not None
    brk = ReconciliationBreak.objects.get()
    assert (brk.type, brk.status, brk.payment_id, brk.provider) == (
        BreakType.STUCK_UNRESOLVED, "open", payment.id, "cielo")
    assert brk.our_data["checks"] == 7 and brk.our_data["attempt_id"]

    time_machine.move_to(T0 + timedelta(days=9), tick=False)
    assert jobs.janitor_job().examined == 0
    payment.refresh_from_db()
    assert payment.status == "authorization_requested"
    assert payment.attempts.count() == 1  # never re-sent, never a new key
    assert len(simulator.control.charges(order_id=payment.id)) == 1


@pytest.mark.django_db
def test_a_janitor_that_was_down_skips_past_slots_instead_of_running_them_back_to_back(
    simulator, merchant, time_machine
):
    routing_rule("rede")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, card="pm_card_drop")
    simulator.control.reset(seed="forgotten")  # the provider lost the charge: not definite
    time_machine.move_to(T0 + timedelta(days=2, hours=3), tick=False)
    run = jobs.janitor_job()
    check = _check(payment.id)
    assert (run.examined, check.checks, check.last_result) == (1, 1, "not_found:"
                                                               "authorization_requested")
    assert check.next_check_at == T0 + timedelta(days=3)


@pytest.mark.django_db
def test_a_refund_whose_answer_was_lost_succeeds_when_the_charge_is_fully_refunded(
    simulator, merchant, time_machine
):
    routing_rule("getnet")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, amount=3000)
    simulator.control.configure("getnet", drop_rate=1.0, fault_operations=["refund"])
    refund = services.refund_create(merchant=merchant, payment_id=payment.id)
    assert refund.status == "pending"
    assert refund.attempts.get().status == "unknown"

    time_machine.move_to(T0 + timedelta(minutes=5), tick=False)
    run = jobs.janitor_job()
    refund.refresh_from_db()
    payment.refresh_from_db()
    assert (run.examined, run.fixed) == (1, 1)
    assert refund.status == "succeeded" and payment.status == "refunded"
    assert JournalEntry.objects.filter(reference_type="refund", reference_id=refund.id,
                                       kind="refund_succeeded").count() == 1


@pytest.mark.django_db
def test_a_partial_refund_without_an_answer_ends_in_a_break(simulator, merchant, time_machine):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, amount=3000)
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["refund"])
    refund = services.refund_create(merchant=merchant, payment_id=payment.id, amount=1000)
    time_machine.move_to(T0 + timedelta(days=6), tick=False)
    run = jobs.janitor_job()  # the only slot left is now: one look, then a human
    refund.refresh_from_db()
    assert (run.examined, run.broken, refund.status) == (1, 1, "pending")
    brk = ReconciliationBreak.objects.get(type=BreakType.STUCK_UNRESOLVED)
    assert (brk.refund_id, brk.payment_id, brk.key) == (refund.id, payment.id,
                                                        f"refund:{refund.id}")


@pytest.mark.django_db
def test_a_capture_whose_record_was_lost_is_recorded_once_by_the_janitor(
    simulator, merchant, monkeypatch, time_machine
):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    payment = _operation_stuck(monkeypatch, merchant, "capture", sent=True)
    capture = payment.attempts.get(kind="capture")

    time_machine.move_to(T0 + timedelta(seconds=30), tick=False)
    assert jobs.janitor_job().examined == 0  # within the grace period: maybe still running
    with pytest.raises(StateError):  # and until it has an answer, nothing else runs
        services.payment_cancel(merchant=merchant, payment_id=payment.id)

    time_machine.move_to(T0 + timedelta(seconds=61), tick=False)
    run = jobs.janitor_job()
    payment.refresh_from_db()
    assert (run.examined, run.fixed, run.broken) == (1, 1, 0)
    assert run.details["answers"] == {"captured:captured": 1}
    assert payment.status == "captured" and payment.amount_captured == 1050
    assert payment.attempts.get(kind="capture").status == "approved"
    assert payment.attempts.count() == 2  # the authorization and the one capture
    assert _captures(payment.id) == 1
    assert _events(payment.id, "payment.captured") == 1
    assert len(simulator.control.charges(order_id=payment.id)) == 1
    assert ledger_verify().ok
    check = ReconciliationCheck.objects.get(object_type="capture_or_void", object_id=capture.id)
    assert check.closed_at is not None and check.attempt_id == capture.id

    again = jobs.janitor_job()
    assert (again.examined, _captures(payment.id)) == (0, 1)


@pytest.mark.django_db
def test_a_capture_that_never_reached_the_provider_is_sent_with_its_own_key_once(
    simulator, merchant, monkeypatch, time_machine
):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    payment = _operation_stuck(monkeypatch, merchant, "capture", sent=False)
    capture = payment.attempts.get(kind="capture")
    assert simulator.control.charges(order_id=payment.id)[0]["status"] == "authorized"

    time_machine.move_to(T0 + timedelta(seconds=61), tick=False)
    run = jobs.janitor_job()
    payment.refresh_from_db()
    assert (run.examined, run.fixed) == (1, 1)
    assert run.details["answers"] == {"sent:captured": 1}
    assert payment.status == "captured" and _captures(payment.id) == 1
    assert payment.attempts.get(kind="capture").status == "approved"
    assert payment.attempts.count() == 2  # the same attempt was sent, not a new one

    # The original request turning up late with the same key gets the first answer back (a new
    # key would have been refused: the charge is no longer authorized) and changes nothing.
    late = get_provider("cielo").capture(CaptureRequest(
        idempotency_key=capture.provider_idempotency_key,
        provider_reference=payment.provider_reference, amount=1050, currency="brl"))
    assert late.outcome == Outcome.APPROVED
    services.payment_capture_record(attempt_id=capture.id, result=late)
    services.payment_operation_execute(attempt_id=capture.id)
    payment.refresh_from_db()
    assert (payment.status, payment.amount_captured) == ("captured", 1050)
    assert _captures(payment.id) == 1 and _events(payment.id, "payment.captured") == 1
    [charge] = simulator.control.charges(order_id=payment.id)
    assert (charge["status"], charge["captured"]) == ("captured", 1050)
    assert ledger_verify().ok


@pytest.mark.django_db
@pytest.mark.parametrize("sent", [True, False], ids=["record_lost", "never_sent"])
def test_a_cancel_left_without_an_answer_is_finished_by_the_janitor(
    simulator, merchant, monkeypatch, time_machine, sent
):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    payment = _operation_stuck(monkeypatch, merchant, "void", sent=sent)

    time_machine.move_to(T0 + timedelta(seconds=61), tick=False)
    run = jobs.janitor_job()
    payment.refresh_from_db()
    assert (run.examined, run.fixed) == (1, 1)
    assert run.details["answers"] == {("voided:canceled" if sent else "sent:canceled"): 1}
    assert payment.status == "canceled"
    assert payment.attempts.get(kind="void").status == "approved"
    assert _events(payment.id, "payment.canceled") == 1 and _captures(payment.id) == 0
    [charge] = simulator.control.charges(order_id=payment.id)
    assert charge["status"] == "voided"
    assert ledger_verify().ok
    assert jobs.janitor_job().examined == 0


@pytest.mark.django_db
def test_a_capture_the_provider_never_answers_about_ends_in_a_break(
    simulator, merchant, settings, time_machine
):
    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, capture_method="manual")
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["capture"])
    with pytest.raises(ProviderError):
        services.payment_capture(merchant=merchant, payment_id=payment.id)
    capture = payment.attempts.get(kind="capture")
    assert capture.status == "unknown"
    settings.PROVIDERS = {**settings.PROVIDERS,  # and then unreachable for good
                          "cielo": {**settings.PROVIDERS["cielo"],
                                    "base_url": "http://127.0.0.1:9/cielo"}}

    time_machine.move_to(T0 + timedelta(minutes=5), tick=False)
    run = jobs.janitor_job()
    check = ReconciliationCheck.objects.get(object_type="capture_or_void", object_id=capture.id)
    assert (run.examined, run.fixed, run.broken) == (1, 0, 0)
    assert check.next_check_at == T0 + timedelta(hours=1)

    time_machine.move_to(T0 + timedelta(days=5), tick=False)  # the last slot
    run = jobs.janitor_job()
    payment.refresh_from_db()
    assert (run.examined, run.broken, payment.status) == (1, 1, "authorized")
    brk = ReconciliationBreak.objects.get(type=BreakType.STUCK_UNRESOLVED)
    assert (brk.key, brk.payment_id, brk.provider) == (
        f"capture_or_void:{capture.id}", payment.id, "cielo")
    assert brk.our_data["operation"] == "capture" and brk.our_data["checks"] == 2
    assert payment.attempts.count() == 2 and _captures(payment.id) == 0


@pytest.mark.django_db(transaction=True)
def test_two_janitors_started_together_process_each_stuck_payment_once(
    simulator, merchant, time_machine
):
    routing_rule("getnet")
    time_machine.move_to(T0, tick=False)
    # Five: a sixth lost answer in a row would open getnet's circuit breaker.
    made = [_pay(merchant, card="pm_card_drop", amount=1000 + i) for i in range(5)]
    assert {p.status for p in made} == {"authorization_requested"}
    stuck = [p.id for p in made]
    simulator.control.configure("getnet", latency_ms=50)  # lookups overlap
    time_machine.move_to(T0 + timedelta(minutes=6), tick=False)
    barrier = threading.Barrier(2)
    results: list[janitor.JanitorResult] = []

    def run(name: str) -> None:
        try:
            barrier.wait()
            results.append(janitor.janitor_run(owner=name, batch_size=2))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(f"janitor-{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    assert sum(result.examined for result in results) == len(stuck)
    assert sum(result.fixed for result in results) == len(stuck)
    for payment_id in stuck:
        assert Payment.objects.get(pk=payment_id).status == "captured"
        assert _captures(payment_id) == 1
        assert Event.objects.filter(object_id=payment_id, type="payment.captured").count() == 1
        assert _check(payment_id).checks == 1


@pytest.mark.django_db
def test_a_janitor_killed_after_the_lookup_is_redone_and_still_captures_once(
    simulator, merchant, monkeypatch, time_machine
):
    """The crash a SIGKILL causes: the provider answered and the payment was recorded, but the
    janitor's own bookkeeping never ran. The lease keeps others away until it ends; the same
    task (redelivered, same id) takes its claim back at once."""
    routing_rule("rede")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, card="pm_card_drop")
    time_machine.move_to(T0 + timedelta(minutes=5), tick=False)
    real_record = recon_services.check_record

    def crash(**kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(recon_services, "check_record", crash)
    with pytest.raises(RuntimeError):
        jobs.janitor_job(owner="task-1")
    crashed = JobRun.objects.get()
    assert crashed.error == "RuntimeError: worker lost" and crashed.finished_at is not None
    payment.refresh_from_db()
    assert payment.status == "captured" and _captures(payment.id) == 1
    monkeypatch.setattr(recon_services, "check_record", real_record)

    assert jobs.janitor_job(owner="task-2").examined == 0  # leased to task-1
    redelivered = jobs.janitor_job(owner="task-1")
    assert (redelivered.examined, redelivered.fixed) == (1, 1)
    assert redelivered.details["answers"] == {"already_answered": 1}
    assert _captures(payment.id) == 1
    assert Event.objects.filter(object_id=payment.id, type="payment.captured").count() == 1
    assert len(simulator.control.charges(order_id=payment.id)) == 1


@pytest.mark.django_db
def test_a_lease_left_by_a_dead_janitor_expires(simulator, merchant, monkeypatch, time_machine):
    routing_rule("rede")
    time_machine.move_to(T0, tick=False)
    payment = _pay(merchant, card="pm_card_drop")
    time_machine.move_to(T0 + timedelta(minutes=5), tick=False)
    claimed = recon_services.checks_claim(owner="dead", now=T0 + timedelta(minutes=5),
                                          lease=timedelta(minutes=10), limit=10)
    assert [c.object_id for c in claimed] == []  # not discovered yet: nothing to claim
    janitor.janitor_run(owner="dead", time_budget=0)  # discovers, claims, gives back
    recon_services.checks_claim(owner="dead", now=T0 + timedelta(minutes=5),
                                lease=timedelta(minutes=10), limit=10)
    assert jobs.janitor_job().examined == 0
    time_machine.move_to(T0 + timedelta(minutes=16), tick=False)
    run = jobs.janitor_job()
    payment.refresh_from_db()
    assert (run.examined, payment.status, _captures(payment.id)) == (1, "captured", 1)


@pytest.fixture
def manual(simulator):
    """Payouts and deposits finish only through the simulator's control call."""
    for code in ("cielo", "rede", "getnet"):
        simulator.control.configure(code, async_completion_ms=None)
    return simulator


@pytest.mark.django_db
def test_pending_deposits_and_payouts_are_refreshed_on_the_schedule_until_final(
    manual, merchant, time_machine
):
    from wallet import services as wallet

    routing_rule("rede")
    time_machine.move_to(T0, tick=False)
    deposit = wallet.deposit_create(merchant=merchant, amount=10_000, currency="brl",
                                    method="pix")
    assert deposit.status == "pending"

    time_machine.move_to(T0 + timedelta(minutes=4), tick=False)
    assert jobs.janitor_job().examined == 0  # unchanged for less than 5 minutes
    time_machine.move_to(T0 + timedelta(minutes=6), tick=False)
    waiting = jobs.janitor_job()
    check = ReconciliationCheck.objects.get(object_type="deposit", object_id=deposit.id)
    assert (waiting.examined, waiting.fixed, check.last_result) == (1, 0, "refresh:pending")
    assert check.next_check_at == T0 + timedelta(hours=1)  # counted from its last change

    manual.control.complete("rede", "deposit", deposit.provider_reference)
    time_machine.move_to(check.next_check_at, tick=False)
    done = jobs.janitor_job()
    deposit.refresh_from_db()
    assert (done.examined, done.fixed, deposit.status) == (1, 1, "succeeded")

    # A payout whose create answer was lost: the refresh re-sends it with the same key.
    manual.control.configure("rede", drop_rate=1.0, fault_operations=["payout"])
    payout = wallet.payout_create(merchant=merchant, amount=4000, currency="brl",
                                  destination="ba_checking")
    assert (payout.status, payout.provider_reference) == ("pending", "")
    manual.control.configure("rede", drop_rate=0.0)
    time_machine.move_to(check.next_check_at + timedelta(minutes=10), tick=False)
    run = jobs.janitor_job()
    payout.refresh_from_db()
    assert (run.examined, run.fixed, payout.status) == (1, 0, "in_transit")
    assert len([m for m in manual.control.movements("rede") if m["kind"] == "payout"]) == 1
    manual.control.complete("rede", "payout", payout.provider_reference)
    time_machine.move_to(check.next_check_at + timedelta(days=1), tick=False)
    run = jobs.janitor_job()
    payout.refresh_from_db()
    assert (run.examined, run.fixed, payout.status) == (1, 1, "paid")


@pytest.mark.django_db
def test_a_payout_never_final_after_five_days_opens_a_break(manual, merchant, time_machine):
    from wallet import services as wallet

    routing_rule("cielo")
    time_machine.move_to(T0, tick=False)
    deposit = wallet.deposit_create(merchant=merchant, amount=5000, currency="brl",
                                    method="pix")
    time_machine.move_to(T0 + timedelta(days=6), tick=False)
    run = jobs.janitor_job()  # discovered late: one look, the schedule is over, a human
    brk = ReconciliationBreak.objects.get()
    assert (run.examined, run.broken) == (1, 1)
    assert (brk.type, brk.key, brk.provider, brk.our_amount) == (
        BreakType.STUCK_UNRESOLVED, f"deposit:{deposit.id}", "cielo", 5000)
    assert brk.our_data["status"] == "pending"
