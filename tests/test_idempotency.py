"""Idempotency-Key: replay, 409 in flight, 422 on mismatch, nothing stored for 4xx that changed
nothing, and 50 concurrent identical requests that make exactly one payment."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import time_machine
from django.db import connection

from core.idempotency import idempotency_reap
from core.models import IdempotencyKey
from payments.models import Payment, PaymentAttempt
from tests.conftest import Api, assert_error

BODY = {"amount": 2500, "currency": "usd", "payment_method": "pm_card_visa"}


@pytest.mark.django_db
def test_same_key_same_body_replays_the_first_response(api):
    first = api.post("/payments", BODY, key="order-1")
    second = api.post("/payments", BODY, key="order-1")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Payment.objects.count() == 1


@pytest.mark.django_db
def test_same_key_different_body_is_422(api):
    api.post("/payments", BODY, key="order-2")
    response = api.post("/payments", {**BODY, "amount": 2600}, key="order-2")
    assert_error(response, 422, type="idempotency_error")
    assert Payment.objects.count() == 1


@pytest.mark.django_db
def test_same_key_on_another_path_is_422(api, make_payment):
    payment = make_payment(state="created")
    api.post("/payments", BODY, key="k")
    assert api.post(f"/payments/{payment.id}/cancel", {}, key="k").status_code == 422


@pytest.mark.django_db
def test_after_a_400_the_same_key_with_a_fixed_body_succeeds(api):
    bad = api.post("/payments", {**BODY, "amount": "25"}, key="order-3")
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.filter(key="order-3").exists()
    good = api.post("/payments", BODY, key="order-3")
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good


@pytest.mark.django_db
def test_keys_are_scoped_per_merchant(api, other_api):
    mine = api.post("/payments", BODY, key="shared")
    theirs = other_api.post("/payments", {**BODY, "amount": 1}, key="shared")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


@pytest.mark.django_db
def test_a_key_still_in_flight_is_409(api, merchant):
    import json

    from core.idempotency import fingerprint

    IdempotencyKey.objects.create(
        merchant=merchant, key="busy", method="POST", path="/api/v1/payments",
        fingerprint=fingerprint("POST", "/api/v1/payments", json.dumps(BODY).encode()),
        status="in_progress", locked_at=__import__("django.utils.timezone").utils.timezone.now(),
    )
    response = api.post("/payments", BODY, key="busy")
    assert_error(response, 409, code="idempotency_key_in_use")
    assert Payment.objects.count() == 0


@pytest.mark.django_db
def test_a_crashed_request_is_resumed_without_a_duplicate(api, merchant):
    """The first request committed its payment, then died before storing the response."""
    import json

    from django.utils import timezone

    from core.idempotency import fingerprint
    from payments import services

    services.payment_create(merchant=merchant, idempotency_key="crash", **BODY)
    IdempotencyKey.objects.create(
        merchant=merchant, key="crash", method="POST", path="/api/v1/payments",
        fingerprint=fingerprint("POST", "/api/v1/payments", json.dumps(BODY).encode()),
        status="in_progress", locked_at=timezone.now() - timedelta(minutes=5),
    )
    response = api.post("/payments", BODY, key="crash")
    assert response.status_code == 201
    assert Payment.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tkey", "ключ"])
@pytest.mark.django_db
def test_invalid_keys_are_400(api, key):
    response = api.post("/payments", BODY, key=key)
    assert_error(response, 400, param="Idempotency-Key")
    assert Payment.objects.count() == 0


@pytest.mark.django_db
def test_the_reaper_deletes_keys_older_than_24_hours(api):
    with time_machine.travel("2026-01-01T00:00:00Z"):
        api.post("/payments", BODY, key="old")
    with time_machine.travel("2026-01-01T23:00:00Z"):
        api.post("/payments", BODY, key="young")
    with time_machine.travel("2026-01-02T00:30:00Z"):
        assert idempotency_reap() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["young"]


@pytest.mark.django_db(transaction=True)
def test_50_concurrent_posts_with_one_key_make_one_payment_and_one_attempt(merchant_and_key):
    _, raw_key = merchant_and_key
    body = {**BODY, "confirm": True}

    def post(_: int):
        try:
            return Api(raw_key).post("/payments", body, key="flood")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(post, range(50)))
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {202, 409}, statuses
    winners = [r for r in responses if r.status_code == 202]
    assert winners, "at least one request must succeed"
    first = next(r for r in winners if "Idempotent-Replayed" not in r)
    for response in winners:
        assert response.json() == first.json()
    assert sum(1 for r in winners if "Idempotent-Replayed" not in r) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert Payment.objects.count() == 1
    assert PaymentAttempt.objects.count() == 1


@pytest.mark.django_db
def test_a_replayed_webhook_secret_is_never_stored_in_plain_text(api, settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    body = {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]}
    first = api.post("/webhook_endpoints", body, key="we-1")
    assert first.status_code in (200, 201), first.json()
    secret = first.json()["secret"]
    assert secret.startswith("whsec_")
    stored = IdempotencyKey.objects.get(key="we-1")
    assert secret not in str(stored.response_body)
    replay = api.post("/webhook_endpoints", body, key="we-1")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
