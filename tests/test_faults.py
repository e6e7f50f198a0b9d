"""Fault tests: the database connection dies mid-capture, the providers are down, Redis is
gone. Each ends with a clean error for the client, nothing half-written, and a clean ledger."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from ledger.verify import ledger_verify
from payments import services
from payments.models import Payment
from tests.conftest import routing_rule


def _terminate_my_connection() -> None:
    pid = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"] or "postgres",
                         dbname=db["NAME"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.django_db(transaction=True)
def test_a_connection_killed_during_a_capture_fails_cleanly_and_writes_nothing(
        api, merchant, monkeypatch, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/payments", {"amount": 5000, "currency": "usd",
                                         "payment_method": "pm_card_visa",
                                         "capture_method": "manual", "confirm": True})
    payment_id = created.json()["id"]
    real_call = services._call

    def call_then_lose_the_database(provider, operation, request):
        result = real_call(provider, operation, request)
        if operation == "capture":
            _terminate_my_connection()  # the provider captured; our write of it will fail
        return result

    monkeypatch.setattr(services, "_call", call_then_lose_the_database)
    api.client.raise_request_exception = False
    response = api.post(f"/payments/{payment_id}/capture")
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["type"] == "api_error"
    assert "Traceback" not in response.content.decode()
    connection.close()
    payment = Payment.objects.get(pk=payment_id)
    assert (payment.status, payment.amount_captured) == ("authorized", 0)
    capture = payment.attempts.get(kind="capture")
    assert capture.status == "requested"  # committed before the call: reconciliation sees it
    assert ledger_verify().ok


@pytest.mark.django_db
def test_providers_down_open_the_breaker_and_fail_with_a_clear_code(simulator, merchant,
                                                                   settings):
    routing_rule("cielo")
    settings.DEFAULT_PROVIDER = "cielo"
    settings.PROVIDERS = {**settings.PROVIDERS,
                          "cielo": {**settings.PROVIDERS["cielo"],
                                    "base_url": "http://127.0.0.1:9/cielo"}}  # refused
    threshold = settings.PROVIDER_BREAKER.get("failure_threshold", 5)
    outcomes = []
    for _ in range(threshold + 2):
        payment = services.payment_create(merchant=merchant, amount=100, currency="brl",
                                          payment_method="pm_card_visa", confirm=True)
        attempt = payment.attempts.first()
        if attempt is not None:
            services.payment_authorization_execute(attempt_id=attempt.id)
        payment = Payment.objects.get(pk=payment.pk)
        outcomes.append((payment.status, payment.failure_code, payment.attempts.count()))
    assert all(status == "failed" and code == "provider_unavailable"
               for status, code, _ in outcomes), outcomes
    # Once the breaker is open, payments fail fast without any attempt being sent.
    assert outcomes[-1][2] == 0
    from providers.models import ProviderBreaker

    assert ProviderBreaker.objects.get(pk="cielo").state == "open"
