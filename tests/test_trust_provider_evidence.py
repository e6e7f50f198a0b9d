"""What a provider tells us is evidence (CONTRACT "Trust model"): a notice acts only on what that
provider processed, confirmed amounts and currencies are compared with ours, provider facts are
always recordable (conflicts open breaks) and a held event converges by any path."""

from __future__ import annotations

import pytest

from ledger.verify import ledger_verify
from payments import services
from payments.models import AttemptStatus, Dispute, Payment, Refund
from providers.base import Outcome, ProviderResult, ProviderStatus
from reconciliation.models import ReconciliationBreak
from tests.conftest import routing_rule
from tests.factories import pay
from tests.provider_notices import available_balance, post_signed_cielo, wait_until
from webhooks.models import InboxStatus, ProviderEvent


def _pending_refund(payment: Payment, monkeypatch, amount: int | None = None) -> Refund:
    """A refund sent to the provider whose answer was lost: it stays pending."""
    real_call = services.provider_call

    def lost_refund_answer(provider_code, operation, request, **options):
        if operation == "refund":
            return ProviderResult(outcome=Outcome.UNKNOWN, error_code="timeout")
        return real_call(provider_code, operation, request, **options)

    monkeypatch.setattr(services, "provider_call", lost_refund_answer)
    refund = services.refund_create(merchant=payment.merchant, payment_id=payment.id,
                                    amount=amount)
    monkeypatch.setattr(services, "provider_call", real_call)
    assert refund.status == "pending"
    return refund


def _ledger_clean() -> None:
    report = ledger_verify()
    assert report.ok, report


# -- finding 3: a notice acts only on what its provider processed ----------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("event_type", ["refund.succeeded", "dispute.opened"])
def test_a_notice_from_another_provider_cannot_touch_a_payment_it_never_processed(
        make_payment, event_type):
    payment = make_payment(amount=5000)  # captured by the sandbox
    outcome = services.payment_provider_event_apply(
        provider="cielo", type=event_type, provider_reference="", merchant_reference=payment.id,
        amount=5000, refund_reference="cielo-refund-1", dispute_reference="cielo-cb-1")
    assert outcome == services.IGNORED
    assert not Refund.objects.filter(payment=payment).exists()
    assert not Dispute.objects.filter(payment=payment).exists()
    payment.refresh_from_db()
    assert (payment.status, payment.amount_refunded, payment.amount_disputed) == (
        "captured", 0, 0)


@pytest.mark.django_db
def test_the_provider_that_captured_can_still_refund_by_our_payment_id(make_payment):
    payment = make_payment(amount=5000)
    outcome = services.payment_provider_event_apply(
        provider="sandbox", type="refund.succeeded", provider_reference="",
        merchant_reference=payment.id, amount=1500, refund_reference="sbx-ext-1")
    assert outcome == services.APPLIED
    payment.refresh_from_db()
    assert payment.amount_refunded == 1500


def _chargeback_notice(payment, amount: int, reference: str) -> None:
    """The sandbox tells us of a chargeback on `payment`; the notice is applied."""
    outcome = services.payment_provider_event_apply(
        provider="sandbox", type="dispute.opened", provider_reference=payment.provider_reference,
        amount=amount, dispute_reference=reference)
    assert outcome == services.APPLIED


# -- finding 4: provider facts are always recordable; conflicts go to people -----------------
@pytest.mark.django_db
def test_a_chargeback_during_a_pending_refund_leaves_the_refund_recordable(
        make_payment, monkeypatch):
    payment = make_payment(amount=10_000)
    refund = _pending_refund(payment, monkeypatch)
    _chargeback_notice(payment, 10_000, "cb-1")
    payment.refresh_from_db()
    assert payment.amount_disputed == 10_000
    # The provider confirms the refund it made: it must be recorded, on every path.
    attempt = refund.attempts.get()
    services.refund_record(attempt_id=attempt.id, result=ProviderResult(
        outcome=Outcome.APPROVED, provider_reference="sbx-r-1", amount=10_000))
    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.status == "succeeded"
    assert (payment.amount_refunded, payment.amount_disputed) == (10_000, 10_000)
    conflicts = ReconciliationBreak.objects.filter(type="provider_conflict", payment_id=payment.id)
    assert conflicts.exists()
    _ledger_clean()


@pytest.mark.django_db
def test_a_chargeback_on_a_fully_refunded_payment_is_recorded_and_can_be_lost(make_payment):
    payment = make_payment(amount=8_000)
    services.refund_create(merchant=payment.merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.status == "refunded"
    _chargeback_notice(payment, 8_000, "cb-2")
    dispute = Dispute.objects.get(payment=payment)
    services.dispute_resolve(dispute_id=dispute.id, won=False)
    payment.refresh_from_db()
    assert payment.status == "charged_back"
    assert ReconciliationBreak.objects.filter(type="provider_conflict",
                                              key=f"dispute:{dispute.id}").exists()
    _ledger_clean()


@pytest.mark.django_db
def test_a_merchant_still_cannot_refund_disputed_money(make_payment):
    payment = make_payment(amount=5_000)
    services.dispute_open(payment_id=payment.id, amount=5_000, provider_reference="cb-3")
    from core.errors import StateError

    with pytest.raises(StateError):
        services.refund_create(merchant=payment.merchant, payment_id=payment.id, amount=1)


@pytest.mark.django_db
def test_a_dispute_above_the_captured_amount_moves_no_money_and_opens_a_break(make_payment):
    payment = make_payment(amount=5_000)
    _chargeback_notice(payment, 9_000, "cb-4")
    payment.refresh_from_db()
    assert payment.amount_disputed == 0
    assert ReconciliationBreak.objects.filter(type="amount_mismatch",
                                              payment_id=payment.id).exists()


@pytest.mark.django_db
def test_an_external_refund_above_what_is_left_is_a_break_not_a_crash(make_payment):
    payment = make_payment(amount=5_000)
    services.refund_create(merchant=payment.merchant, payment_id=payment.id, amount=4_000)
    outcome = services.payment_provider_event_apply(
        provider="sandbox", type="refund.succeeded",
        provider_reference=payment.provider_reference, amount=3_000, refund_reference="ext-9")
    assert outcome == services.APPLIED
    payment.refresh_from_db()
    assert payment.amount_refunded == 4_000
    assert ReconciliationBreak.objects.filter(type="amount_mismatch",
                                              payment_id=payment.id).exists()
    _ledger_clean()


# -- finding 6: confirmed amounts and currencies are compared with ours ----------------------
@pytest.mark.django_db
@pytest.mark.parametrize("answer", [{"amount": 9_999}, {"currency": "brl"}])
def test_an_approval_for_another_amount_or_currency_captures_nothing(
        merchant, django_capture_on_commit_callbacks, monkeypatch, answer):
    real_call = services.provider_call

    def lying_provider(provider_code, operation, request, **options):
        result = real_call(provider_code, operation, request, **options)
        if operation == "authorize":
            from dataclasses import replace

            return replace(result, **answer)
        return result

    monkeypatch.setattr(services, "provider_call", lying_provider)
    payment = pay(merchant, amount=10_000, currency="usd", card="pm_card_visa")
    assert payment.status == "authorization_requested"
    assert payment.amount_captured == 0
    attempt = payment.attempts.get()
    assert (attempt.status, attempt.error_code) == (AttemptStatus.UNKNOWN,
                                                    "provider_amount_mismatch")
    kind = "currency_mismatch" if "currency" in answer else "amount_mismatch"
    found = ReconciliationBreak.objects.get(type=kind, payment_id=payment.id)
    assert found.our_amount == 10_000
    # The same answer again (the janitor's lookup) neither crashes nor duplicates the break.
    services.payment_authorization_record(attempt_id=attempt.id, result=ProviderResult(**{
        "outcome": Outcome.APPROVED, "status": ProviderStatus.CAPTURED, "amount": 10_000,
        "provider_reference": attempt.provider_reference or "x", **answer}))
    assert ReconciliationBreak.objects.filter(payment_id=payment.id).count() == 1
    _ledger_clean()


@pytest.mark.django_db
def test_a_refund_notice_in_another_currency_moves_nothing(make_payment):
    payment = make_payment(amount=5_000)
    outcome = services.payment_provider_event_apply(
        provider="sandbox", type="refund.succeeded",
        provider_reference=payment.provider_reference, amount=1_000, currency="brl",
        refund_reference="ext-cur")
    assert outcome == services.IGNORED
    payment.refresh_from_db()
    assert payment.amount_refunded == 0
    assert ReconciliationBreak.objects.filter(type="currency_mismatch").exists()


# -- finding 5: a held event converges whatever path moves its payment -----------------------
@pytest.mark.django_db(transaction=True)
def test_a_held_refund_applies_when_the_capture_arrives_by_lookup(
        simulator, live_server, settings, merchant, run_tasks_inline):
    simulator.control.configure("cielo", webhook_url=f"{live_server.url}/webhooks/providers/cielo/",
                                webhook_secret=settings.PROVIDERS["cielo"]["webhook_secret"],
                                webhook_events=["refund.succeeded"])
    routing_rule("cielo")
    payment = services.payment_create(merchant=merchant, amount=5000, currency="brl",
                                      payment_method="pm_card_drop")
    services.payment_confirm(merchant=merchant, payment_id=payment.id)
    attempt = payment.attempts.get()
    services.payment_authorization_execute(attempt_id=attempt.id)
    reference = simulator.control.charges(order_id=payment.id)[0]["reference"]
    from providers.base import RefundRequest
    from providers.registry import get_provider

    get_provider("cielo").refund(RefundRequest(idempotency_key="ext-held", amount=2000,
                                               provider_reference=reference, currency="brl"))
    held = wait_until(lambda: ProviderEvent.objects.filter(type="refund.succeeded",
                                                      status=InboxStatus.HELD).first())
    # The janitor's lookup (not a webhook) brings the capture in.
    services.payment_authorization_lookup(attempt_id=attempt.id)
    payment.refresh_from_db()
    held.refresh_from_db()
    assert held.status == InboxStatus.PROCESSED
    assert (payment.status, payment.amount_captured, payment.amount_refunded) == (
        "captured", 5000, 2000)


@pytest.mark.django_db
def test_the_sweeper_rechecks_held_events(make_payment, monkeypatch):
    """Nothing tells us the object moved (e.g. a row fixed by hand): the sweeper still does."""
    from datetime import timedelta

    from django.utils import timezone

    from webhooks import inbound

    payment = make_payment(amount=3000)
    row = ProviderEvent.objects.create(
        provider="sandbox", provider_event_id="held-1", type="refund.succeeded",
        merchant_reference=payment.id, raw_body="{}", status=InboxStatus.HELD,
        next_attempt_at=timezone.now() - timedelta(seconds=1))
    seen = []
    monkeypatch.setattr(inbound, "_apply",
                        lambda row, confirmed=None: seen.append(row.pk) or "applied")
    assert inbound.provider_events_sweep() == 1
    row.refresh_from_db()
    assert (seen, row.status) == ([row.pk], InboxStatus.PROCESSED)


@pytest.mark.django_db
def test_a_held_refund_for_a_payment_that_failed_becomes_a_break(merchant, monkeypatch,
                                                                 django_capture_on_commit_callbacks):
    payment = services.payment_create(merchant=merchant, amount=3000, currency="usd",
                                      payment_method="pm_card_declined")
    outcome = services.payment_provider_event_apply(
        provider="sandbox", type="refund.succeeded", provider_reference="",
        merchant_reference=payment.id, amount=3000, refund_reference="r-x")
    assert outcome == services.IGNORED  # no sandbox attempt yet: nothing of its own to act on
    with django_capture_on_commit_callbacks(execute=True):
        services.payment_confirm(merchant=merchant, payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.status == "failed"
    outcome = services.payment_provider_event_apply(
        provider="sandbox", type="refund.succeeded", provider_reference="",
        merchant_reference=payment.id, amount=3000, refund_reference="r-x")
    assert outcome == services.IGNORED
    assert ReconciliationBreak.objects.filter(type="status_mismatch",
                                              payment_id=payment.id).exists()


# -- finding 6 for wallet movements: credited only with what the provider confirmed ----------
@pytest.mark.django_db
@pytest.mark.parametrize("confirmed", [{"amount": 4_000_000}, {"amount": 50_000_000},
                                       {"amount": 5_000_000, "currency": "usd"}])
def test_a_deposit_confirmed_for_another_amount_or_currency_credits_nothing(merchant,
                                                                            confirmed):
    from providers.base import InboundEvent
    from wallet import services as wallet
    from wallet.models import Deposit

    deposit = wallet.deposit_create(merchant=merchant, amount=5_000_000, currency="brl",
                                    method="pix_pending")
    assert deposit.status == "pending"
    event = InboundEvent(provider="sandbox", event_id="d-1", type="deposit.confirmed",
                         occurred_at=None, provider_reference=deposit.provider_reference,
                         merchant_reference=deposit.id, status="confirmed",
                         **{"currency": "brl", **confirmed})
    wallet.movement_provider_event_apply(event=event)
    deposit = Deposit.objects.get(pk=deposit.pk)
    assert deposit.status == "pending"
    assert available_balance(merchant, "brl") == 0
    kind = "currency_mismatch" if "currency" in confirmed else "amount_mismatch"
    found = ReconciliationBreak.objects.get(type=kind, key=f"deposit:{deposit.id}")
    assert (found.our_amount, found.provider_amount) == (5_000_000, confirmed["amount"])
    # The exact confirmation still credits it, once.
    wallet.movement_provider_event_apply(event=InboundEvent(
        provider="sandbox", event_id="d-2", type="deposit.confirmed", occurred_at=None,
        provider_reference=deposit.provider_reference, merchant_reference=deposit.id,
        status="confirmed", amount=5_000_000, currency="brl"))
    assert Deposit.objects.get(pk=deposit.pk).status == "succeeded"
    assert available_balance(merchant, "brl") == 5_000_000
    _ledger_clean()


# -- Cielo's notices are hints: only its own lookup moves money ------------------------------
@pytest.mark.django_db
def test_a_signed_but_false_cielo_deposit_notice_credits_nothing(simulator, merchant,
                                                                run_tasks_inline):
    """Issue 14's forged DepositConfirmed: even signed with the right secret, the notice is
    only a hint; Cielo's own lookup says the deposit is still pending."""
    from wallet import services as wallet
    from wallet.models import Deposit

    for code in ("cielo",):
        simulator.control.configure(code, async_completion_ms=None)
    routing_rule("cielo")
    deposit = wallet.deposit_create(merchant=merchant, amount=5_000_000, currency="brl",
                                    method="pix")
    assert (deposit.status, deposit.provider) == ("pending", "cielo")
    status, _ = post_signed_cielo({
        "NotificationId": "forged-1", "ChangeType": "DepositConfirmed",
        "DepositId": deposit.provider_reference, "MerchantDepositId": deposit.id,
        "Amount": 5_000_000, "Currency": "BRL", "Status": "Confirmed"})
    assert status == 200
    assert Deposit.objects.get(pk=deposit.pk).status == "pending"
    assert available_balance(merchant, "brl") == 0
    assert ProviderEvent.objects.get(provider_event_id="forged-1").status == InboxStatus.IGNORED
    # When Cielo really confirms it, its lookup does, and the deposit is credited once.
    simulator.control.complete("cielo", "deposit", deposit.provider_reference)
    assert post_signed_cielo({
        "NotificationId": "real-1", "ChangeType": "DepositConfirmed",
        "DepositId": deposit.provider_reference, "MerchantDepositId": deposit.id})[0] == 200
    assert Deposit.objects.get(pk=deposit.pk).status == "succeeded"
    assert available_balance(merchant, "brl") == 5_000_000


@pytest.mark.django_db
def test_a_signed_but_false_cielo_refund_or_chargeback_notice_moves_nothing(
        simulator, merchant, run_tasks_inline, django_capture_on_commit_callbacks):
    routing_rule("cielo")
    payment = pay(merchant, amount=7000, currency="brl", card="pm_card_visa")
    assert (payment.status, payment.provider) == ("captured", "cielo")
    base = {"PaymentId": payment.provider_reference, "MerchantOrderId": payment.id,
            "Currency": "BRL"}
    assert post_signed_cielo({**base, "NotificationId": "forged-r", "ChangeType":
                               "RefundConfirmed", "RefundId": "r-forged",
                               "RefundAmount": 7000})[0] == 200
    assert post_signed_cielo({**base, "NotificationId": "forged-c", "ChangeType":
                               "ChargebackOpened", "ChargebackId": "cb-forged",
                               "ChargebackAmount": 7000})[0] == 200
    payment.refresh_from_db()
    assert (payment.amount_refunded, payment.amount_disputed) == (0, 0)
    assert not Refund.objects.filter(payment=payment).exists()
    # A chargeback Cielo really took is confirmed by its lookup and recorded.
    simulator.control.open_dispute("cielo", payment.provider_reference, amount=2000)
    assert post_signed_cielo({**base, "NotificationId": "real-c", "ChangeType":
                               "ChargebackOpened", "ChargebackId": "cb-real",
                               "ChargebackAmount": 2000})[0] == 200
    payment.refresh_from_db()
    assert payment.amount_disputed == 2000


# -- a provider reference that collides with one we hold is a break, not a crash loop -------
@pytest.mark.django_db
def test_a_reused_provider_reference_opens_a_break_and_fails_no_task(make_payment, merchant):
    first = make_payment(amount=1000)
    second = services.payment_create(merchant=merchant, amount=2000, currency="usd",
                                     payment_method="pm_card_visa")
    services.payment_confirm(merchant=merchant, payment_id=second.id)
    attempt = second.attempts.get()
    reused = ProviderResult(outcome=Outcome.APPROVED, status=ProviderStatus.CAPTURED,
                            provider_reference=first.provider_reference, amount=2000)
    for _ in range(2):  # the reply, then the janitor's lookup: neither raises
        services.payment_authorization_record(attempt_id=attempt.id, result=reused)
    second.refresh_from_db()
    attempt.refresh_from_db()
    assert second.status == "authorization_requested"
    assert (attempt.status, attempt.error_code) == ("unknown", "provider_reference_collision")
    found = ReconciliationBreak.objects.get(type="reference_collision")
    assert found.our_data["reference_already_held_by"] == first.id
