"""Idempotency survives the reaper (issue 14, finding 7): the object a key created keeps the
request's fingerprint, so the same key with other parameters is 422 at any age, and the same
request still answers with the object it made."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from core.idempotency import idempotency_reap
from core.models import IdempotencyKey
from payments.models import Payment, Refund
from wallet.models import Deposit, Payout

pytestmark = pytest.mark.django_db


def _reaped() -> None:
    """As the scheduled reaper does a day later."""
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        assert idempotency_reap() >= 1
    assert not IdempotencyKey.objects.exists()


def _reuse(api, path: str, first: dict, second: dict, model) -> None:
    created = api.post(path, first, key="reused-key")
    assert created.status_code in (200, 201, 202), created.json()
    object_id = created.json()["id"]
    _reaped()
    count = model.objects.count()
    other = api.post(path, second, key="reused-key")
    assert other.status_code == 422, other.json()
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert model.objects.count() == count
    # The 422 is not stored: the original request, retried, still finds its object.
    again = api.post(path, first, key="reused-key")
    assert again.status_code in (200, 201, 202), again.json()
    assert again.json()["id"] == object_id


def test_a_payment_key_reused_with_other_parameters_after_the_reaper_is_422(api):
    body = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa"}
    _reuse(api, "/payments", body, {**body, "amount": 999_999}, Payment)


def test_a_refund_key_reused_with_other_parameters_after_the_reaper_is_422(api, make_payment):
    payment = make_payment(amount=5000)
    _reuse(api, "/refunds", {"payment": payment.id, "amount": 100},
           {"payment": payment.id, "amount": 200}, Refund)


def test_a_deposit_key_reused_with_other_parameters_after_the_reaper_is_422(api):
    body = {"amount": 5000, "currency": "usd", "method": "pix"}
    _reuse(api, "/deposits", body, {**body, "amount": 5_000_000}, Deposit)


def test_a_payout_key_reused_with_other_parameters_after_the_reaper_is_422(api):
    assert api.post("/deposits", {"amount": 50_000, "currency": "usd",
                                  "method": "pix"}).status_code == 200
    body = {"amount": 1000, "currency": "usd", "destination": "ba_checking"}
    _reuse(api, "/payouts", body, {**body, "amount": 2000}, Payout)
