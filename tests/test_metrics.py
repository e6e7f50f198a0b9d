"""/metrics: Prometheus text with our counters and database gauges; token-protected."""

import pytest

pytestmark = pytest.mark.django_db


def test_metrics_expose_payments_providers_idempotency_and_queues(client, api, make_payment):
    make_payment(state="captured")
    body = {"amount": 100, "currency": "usd", "payment_method": "pm_card_visa"}
    api.post("/payments", body, key="m-1")
    api.post("/payments", body, key="m-1")  # a replay
    text = client.get("/metrics").content.decode()
    assert 'clearhouse_payments{provider="sandbox",status="captured"} 1.0' in text
    assert "clearhouse_provider_latency_seconds_bucket" in text
    assert 'clearhouse_idempotency_total{outcome="replayed"}' in text
    assert 'clearhouse_webhook_queue{measure="count"}' in text
    assert "clearhouse_payments_awaiting_reconciliation" in text


def test_metrics_need_the_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
