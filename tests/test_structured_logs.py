"""Logs are JSON lines with request id, merchant id and latency; secrets never reach them."""

import io
import json
import logging
import logging.config

import pytest
import structlog

from core.logging import formatter


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.config.dictConfigClass({"version": 1}).configure_custom(
        dict(formatter("json"))))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line]
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.mark.django_db
def test_each_api_request_logs_one_json_line_with_ids_and_latency(api, merchant, log_lines):
    response = api.post("/payments", {"amount": 100, "currency": "usd",
                                      "payment_method": "pm_card_visa"})
    lines = [line for line in log_lines() if line.get("event") == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == response["Request-Id"]
    assert line["merchant_id"] == merchant.id
    assert line["status"] == 201
    assert line["latency_ms"] >= 0
    assert line["path"] == "/api/v1/payments"


def test_secrets_and_card_numbers_are_redacted(log_lines):
    log = structlog.get_logger("test")
    log.info("calling provider", api_key="sk_test_abc", headers={"Authorization": "Bearer x"},
             note="key sk_live_123 and card 4242 4242 4242 4242", secret="whsec_zzz")
    logging.getLogger("plain").warning("raw line with sk_test_leak and 4000056655665556")
    text = json.dumps(log_lines())
    for leaked in ("sk_test_abc", "sk_live_123", "4242 4242 4242 4242", "whsec_zzz",
                   "sk_test_leak", "4000056655665556", "Bearer x"):
        assert leaked not in text
    assert "[REDACTED]" in text
