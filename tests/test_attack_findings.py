"""Holes found by a hostile review of the trust boundaries (issue 14's claims). Each test states
the behaviour the contract promises and fails today; strict xfail keeps the suite green until the
hole is fixed (then the xfail turns into an XPASS failure and the marker must go)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from payments import services
from payments.models import Dispute, Refund
from tests.conftest import routing_rule
from tests.factories import pay
from tests.provider_notices import available_balance, post_signed_cielo


# -- 1. Cielo hint → lookup binds another sale to the payment the notice names ------------------
@pytest.mark.django_db
def test_a_cielo_notice_cannot_capture_a_payment_with_another_payments_sale(
        simulator, merchant, run_tasks_inline):
    routing_rule("cielo")
    # Payment A: Cielo charged it, but the answer was lost (no reference on our side).
    a = services.payment_create(merchant=merchant, amount=5000, currency="brl",
                                payment_method="pm_card_drop")
    services.payment_confirm(merchant=merchant, payment_id=a.id)
    services.payment_authorization_execute(attempt_id=a.attempts.get().id)
    a.refresh_from_db()
    assert (a.status, a.provider_reference) == ("authorization_requested", "")
    sale_of_a = simulator.control.charges(order_id=a.id)[0]["reference"]
    # Payment B: its attempt was never sent; Cielo has no sale for it at all.
    b = services.payment_create(merchant=merchant, amount=5000, currency="brl",
                                payment_method="pm_card_visa")
    services.payment_confirm(merchant=merchant, payment_id=b.id)
    assert simulator.control.charges(order_id=b.id) == []
    # A (signed) notice naming A's sale but B's order id.
    post_signed_cielo({"NotificationId": "bind-1", "ChangeType": "PaymentCaptured",
                        "PaymentId": sale_of_a, "MerchantOrderId": b.id})
    b.refresh_from_db()
    assert b.status == "authorization_requested", (
        f"B is {b.status} with {b.amount_captured} via sale {b.provider_reference}, "
        "which Cielo made for A")


@pytest.mark.django_db
def test_a_cielo_notice_cannot_credit_a_deposit_with_another_deposits_money(
        simulator, merchant, run_tasks_inline):
    from wallet import services as wallet
    from wallet.models import Deposit

    simulator.control.configure("cielo", async_completion_ms=None, drop_rate=1.0,
                                fault_operations=["deposit"])
    routing_rule("cielo")
    a = wallet.deposit_create(merchant=merchant, amount=700_000, currency="brl", method="pix")
    b = wallet.deposit_create(merchant=merchant, amount=700_000, currency="brl", method="pix")
    assert (a.provider_reference, b.provider_reference) == ("", "")  # both replies lost
    reference_of_a = {m["order_id"]: m["reference"]
                      for m in simulator.control.movements("cielo")}[a.id]
    simulator.control.complete("cielo", "deposit", reference_of_a)  # A paid; B still pending
    post_signed_cielo({"NotificationId": "bind-d", "ChangeType": "DepositConfirmed",
                        "DepositId": reference_of_a, "MerchantDepositId": b.id})
    assert Deposit.objects.get(pk=b.pk).status == "pending"
    # The notice is a hint: what it may move is what Cielo's lookup says, i.e. A's money to A
    # (really paid), never to B; credited exactly once whichever path gets there first.
    assert available_balance(merchant, "brl") in (0, 700_000)
    simulator.control.configure("cielo", drop_rate=0.0)
    a = wallet.deposit_refresh(deposit_id=a.id)  # must not raise
    assert a.status == "succeeded"
    assert Deposit.objects.get(pk=b.pk).status == "pending"
    assert available_balance(merchant, "brl") == 700_000


# -- 2. Cielo refund notices: pending refunds are not counted --------------------------------
@pytest.mark.django_db
def test_a_fake_cielo_refund_notice_cannot_take_the_place_of_a_real_pending_refund(
        simulator, merchant, run_tasks_inline, django_capture_on_commit_callbacks):
    routing_rule("cielo")
    payment = pay(merchant, amount=10_000, currency="brl", card="pm_card_visa")
    simulator.control.configure("cielo", drop_rate=1.0, fault_operations=["refund"])
    refund = services.refund_create(merchant=merchant, payment_id=payment.id, amount=4000)
    assert refund.status == "pending"  # Cielo refunded 4000; its answer was lost
    real = simulator.control.charges(order_id=payment.id)[0]["refunds"][0]["reference"]
    base = {"PaymentId": payment.provider_reference, "MerchantOrderId": payment.id,
            "Currency": "BRL", "ChangeType": "RefundConfirmed"}
    post_signed_cielo({**base, "NotificationId": "fake-r", "RefundId": "invented",
                        "RefundAmount": 3000})
    post_signed_cielo({**base, "NotificationId": "real-r", "RefundId": real,
                        "RefundAmount": 4000})
    payment.refresh_from_db()
    refund.refresh_from_db()
    assert not Refund.objects.filter(payment=payment, provider_reference="invented").exists()
    assert (refund.status, payment.amount_refunded) == ("succeeded", 4000)


# -- 3. A movement reference that another movement holds -------------------------------------
@pytest.mark.django_db
def test_a_reused_deposit_reference_is_a_break_not_a_500(merchant, api, monkeypatch):
    from providers.base import MovementResult, MovementStatus, Outcome
    from wallet import services as wallet

    first = wallet.deposit_create(merchant=merchant, amount=5000, currency="brl", method="pix")
    assert first.provider_reference
    real_call = wallet.provider_call

    def provider_reuses_a_reference(code, operation, argument, **options):
        if operation == "deposit_create":
            return MovementResult(outcome=Outcome.APPROVED, status=MovementStatus.PENDING,
                                  provider_reference=first.provider_reference, amount=5000,
                                  currency="brl")
        return real_call(code, operation, argument, **options)

    monkeypatch.setattr(wallet, "provider_call", provider_reuses_a_reference)
    response = api.post("/deposits", {"amount": 5000, "currency": "brl", "method": "pix"})
    assert response.status_code < 500, response.content


# -- 4. Dispute notices without a dispute reference are not idempotent ------------------------
@pytest.mark.django_db
def test_a_redelivered_dispute_notice_without_reference_disputes_once(make_payment):
    payment = make_payment(amount=10_000)
    for _ in range(2):
        services.payment_provider_event_apply(
            provider="sandbox", type="dispute.opened",
            provider_reference=payment.provider_reference, amount=4000, dispute_reference="")
    payment.refresh_from_db()
    assert payment.amount_disputed <= 4000
    assert Dispute.objects.filter(payment=payment).count() <= 1


# -- 5. Card data ------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.planted_card_number
@pytest.mark.parametrize("written", [
    "4242  4242  4242  4242", "4242\t4242\t4242\t4242", "4242\u00a04242\u00a04242\u00a04242",
    "4242\u20134242\u20134242\u20134242",
    "\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12\uff14\uff12\uff14"
    "\uff12"], ids=["double-space", "tab", "nbsp", "en-dash", "fullwidth"])
def test_a_card_number_written_with_other_separators_is_refused(api, written):
    response = api.post("/payments", {"amount": 1000, "currency": "usd",
                                      "payment_method": "pm_card_visa", "description": written})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "card_data_not_allowed"


@pytest.mark.django_db
@pytest.mark.planted_card_number
def test_a_card_number_as_idempotency_key_is_refused(api):
    from core.pan_scan import scan_database

    response = api.post("/payments", {"amount": 1000, "currency": "usd",
                                      "payment_method": "pm_card_visa"},
                        key="4242424242424242")
    assert scan_database() == []
    assert response.status_code == 400


# -- 6. Idempotency after the reaper for webhook endpoints ------------------------------------
@pytest.mark.django_db
def test_a_reaped_key_reused_for_another_webhook_endpoint_answers_422(api, settings):
    from core.idempotency import idempotency_reap

    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    first = api.post("/webhook_endpoints", {"url": "https://127.0.0.1:9/a",
                                            "enabled_events": ["*"]}, key="endpoint-key")
    assert first.status_code == 201
    assert idempotency_reap(older_than=timedelta(seconds=-1)) == 1
    second = api.post("/webhook_endpoints", {"url": "https://127.0.0.1:9/b",
                                             "enabled_events": ["*"]}, key="endpoint-key")
    assert second.status_code == 422


# -- 7. Production: a test-mode provider with production credentials ---------------------------
@pytest.mark.django_db
def test_deploy_checks_refuse_a_test_mode_provider_at_a_production_endpoint(settings):
    from providers.checks import check_live_providers, check_provider_credentials
    from providers.routing import route

    settings.PROVIDERS_ENABLED = ["sandbox", "cielo"]
    settings.PROVIDERS_LIVE = []  # the operator has not listed cielo (yet)
    settings.PROVIDERS = {"cielo": {"base_url": "https://api.cieloecommerce.cielo.com.br",
                                    "merchant_id": "prod-merchant-id",
                                    "merchant_key": "prod-merchant-key",
                                    "webhook_secret": "prod-webhook-secret"}}
    routing_rule("cielo")
    reaches = route(merchant_id="acct_x", currency="brl", amount=100,
                    payment_method="pm_card_visa", livemode=False)
    errors = check_live_providers(None) + check_provider_credentials(None)
    assert errors or "cielo" not in reaches, (
        "test-mode payments reach Cielo's production endpoint and check --deploy is silent")
