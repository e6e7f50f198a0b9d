"""/metrics: Prometheus text with our counters and database gauges; token-protected."""

from pathlib import Path

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


def test_every_app_reports_its_gauges_through_its_own_selectors(client, make_payment):
    """Each app registers its gauges (core.metrics.gauge_register) and reads its own tables;
    core names no app's table."""
    make_payment(state="captured")
    text = client.get("/metrics").content.decode()
    for line in ('clearhouse_payments{provider="sandbox",status="captured"} 1.0',
                 "clearhouse_payments_awaiting_reconciliation 0.0",
                 'clearhouse_webhook_queue{measure="oldest_age_seconds"}',
                 "# HELP clearhouse_provider_inbox ",
                 "# HELP clearhouse_provider_breaker_open ",
                 "# HELP clearhouse_reconciliation_breaks_open ",
                 "# HELP clearhouse_job_last_run ",
                 'clearhouse_queue_oldest_work_age_seconds{queue="providers"}',
                 'clearhouse_queue_oldest_work_age_seconds{queue="inbound"}',
                 'clearhouse_queue_oldest_work_age_seconds{queue="webhooks"}'):
        assert line in text, line
    source = (Path(__file__).resolve().parent.parent / "core" / "metrics.py").read_text()
    for table in ("payments_", "webhooks_", "providers_", "reconciliation_", "wallet_"):
        assert f"FROM {table}" not in source and f" {table}" not in source, table
