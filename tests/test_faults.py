"""Fault tests (issue 9): a worker SIGKILLed mid provider call, the database connection killed
mid-capture, Redis (rate limiter and broker) stopped, the providers down. Each ends with a clean
answer for the client, nothing half-written, `ledger_verify` clean and no card charged twice at
the simulator."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import psycopg
import pytest
from django.db import connection
from kombu.exceptions import OperationalError

from core import ratelimit
from ledger.models import JournalEntry
from ledger.verify import ledger_verify
from payments import services, tasks
from payments.models import Payment
from providers.models import ProviderBreaker
from reconciliation import jobs
from tests.celery_workers import broker, enqueue, start_worker, stop_workers, wait_for
from tests.conftest import routing_rule
from tests.test_webhooks_support import subscribe
from webhooks import services as webhook_services
from webhooks import tasks as webhook_tasks
from webhooks.models import Event

__all__ = ["broker"]  # a fixture, used by name
BRL_CARD = {"amount": 5000, "currency": "brl", "payment_method": "pm_card_visa"}


def _money_intact(simulator, payment_id: str, *, charges: int) -> None:
    """What every fault test ends with: the ledger proves itself, the provider holds exactly
    `charges` charges for the payment and no order anywhere is charged twice."""
    result = ledger_verify()
    assert result.ok, result
    assert len(simulator.control.charges(order_id=payment_id)) == charges
    assert simulator.control.double_charged() == []
    assert JournalEntry.objects.filter(reference_type="payment", reference_id=payment_id,
                                       kind="capture").count() == min(charges, 1)


def _terminate_my_connection() -> None:
    pid = connection.connection.info.backend_pid
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"] or "postgres",
                         dbname=db["NAME"], autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_provider_call_is_replaced_and_the_card_is_charged_once(
        simulator, merchant, broker, monkeypatch):
    routing_rule("cielo")
    payment = services.payment_create(merchant=merchant, confirm=True, **BRL_CARD)
    attempt = payment.attempts.get()  # its task went to the test's in-memory broker: lost
    # Spy on the in-process simulator: the worker's authorize request has arrived (the
    # simulator then waits 5 s before it charges, as a slow acquirer does).
    arrived = threading.Event()
    book = simulator.server.simulator
    real_request = book._provider_request

    def spy(dialect, provider_book, request):
        if request.method == "POST":
            arrived.set()
        return real_request(dialect, provider_book, request)

    monkeypatch.setattr(book, "_provider_request", spy)
    simulator.control.configure("cielo", latency_ms=5000)
    enqueue(tasks.payment_authorize, broker, args=[attempt.id])

    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    first = start_worker(f"doomed-{tag}", broker=broker, simulator_url=simulator.base_url)
    workers = {first.pid: first}
    try:
        wait_for(arrived.is_set, 120, "the worker's authorize call to reach the provider",
                 workers)
        os.kill(first.pid, signal.SIGKILL)  # mid-call: no answer recorded, message unacked
        first.communicate(timeout=10)
        workers.clear()
        assert Payment.objects.get(pk=payment.pk).status == "authorization_requested"
        simulator.control.configure("cielo", latency_ms=0)
        second = start_worker(f"heir-{tag}", broker=broker,
                              simulator_url=simulator.base_url)
        workers = {second.pid: second}
        # acks_late + reject_on_worker_lost: the broker hands the task to the second worker,
        # which re-sends the same provider idempotency key and gets the first call's answer.
        wait_for(lambda: Payment.objects.get(pk=payment.pk).status == "captured", 90,
                 "the redelivered authorization task", workers)
    finally:
        stop_workers(workers)

    payment = Payment.objects.get(pk=payment.pk)
    assert payment.amount_captured == 5000
    assert list(payment.attempts.values_list("id", "status")) == [(attempt.id, "approved")]
    assert Event.objects.filter(object_id=payment.id, type="payment.captured").count() == 1
    _money_intact(simulator, payment.id, charges=1)


@pytest.mark.django_db(transaction=True)
def test_a_connection_killed_during_a_capture_fails_cleanly_and_writes_nothing(
        simulator, api, merchant, monkeypatch, django_capture_on_commit_callbacks):
    routing_rule("cielo")
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/payments", {**BRL_CARD, "capture_method": "manual",
                                         "confirm": True})
    payment_id = created.json()["id"]
    assert Payment.objects.get(pk=payment_id).status == "authorized"
    real_call = services.provider_call

    def call_then_lose_the_database(provider, operation, request, **options):
        result = real_call(provider, operation, request, **options)
        if operation == "capture":
            _terminate_my_connection()  # the provider captured; our write of it will fail
        return result

    monkeypatch.setattr(services, "provider_call", call_then_lose_the_database)
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
    # A client retry cannot capture twice while the first capture's outcome is open…
    retry = api.post(f"/payments/{payment_id}/capture")
    assert (retry.status_code, retry.json()["error"]["code"]) == (
        409, "payment_operation_in_progress")
    # …and the provider's own notice of the capture completes it through the normal path.
    assert services.payment_provider_event_apply(
        provider="cielo", type="payment.captured", provider_reference=payment.provider_reference,
        amount=5000) == "applied"
    payment = Payment.objects.get(pk=payment_id)
    assert (payment.status, payment.amount_captured) == ("captured", 5000)
    assert payment.attempts.get(kind="capture").status == "approved"
    _money_intact(simulator, payment_id, charges=1)


@pytest.mark.django_db
def test_redis_stopped_payments_are_taken_and_the_sweepers_finish_them(
        simulator, api, merchant, settings, monkeypatch, receivers, loopback_allowed,
        django_capture_on_commit_callbacks, caplog):
    """Redis is both the rate limiter's store and the Celery broker. With it gone the limiter
    fails open, the payment is accepted, its task and its webhooks cannot be enqueued at
    commit; the janitor sends the authorization and the outbox sweeper the webhooks."""
    routing_rule("cielo")
    receiver = receivers()
    subscribe(merchant, receiver, ["payment.captured"])
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.RATE_LIMIT_ENABLED = True
    settings.RECON_JANITOR_GRACE_SECONDS = 0  # the janitor need not wait for a queued task
    ratelimit._Redis.reset()

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(tasks.payment_authorize, "delay", broker_down)
    monkeypatch.setattr(webhook_tasks.webhook_deliver, "delay", broker_down)
    try:
        with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
            response = api.post("/payments", {**BRL_CARD, "confirm": True})
    finally:
        ratelimit._Redis.reset()
    assert response.status_code == 202, response.json()
    assert "RateLimit-Limit" not in response  # the limiter failed open
    assert "could not enqueue authorization" in caplog.text
    payment_id = response.json()["id"]
    assert Payment.objects.get(pk=payment_id).status == "authorization_requested"

    run = jobs.janitor_job()
    assert (run.examined, run.fixed, run.error) == (1, 1, "")
    assert Payment.objects.get(pk=payment_id).status == "captured"
    assert receiver.received == []  # the captured webhook's enqueue failed too
    assert webhook_services.delivery_sweep(concurrency=1) == 1
    assert webhook_services.delivery_sweep(concurrency=1) == 0
    captured = Event.objects.get(object_id=payment_id, type="payment.captured")
    assert receiver.event_counts() == {captured.id: 1}
    assert jobs.janitor_job().examined == 0  # nothing left for a second run
    _money_intact(simulator, payment_id, charges=1)


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
        _money_intact(simulator, payment.id, charges=0)
    assert all(status == "failed" and code == "provider_unavailable"
               for status, code, _ in outcomes), outcomes
    # Once the breaker is open, payments fail fast without any attempt being sent.
    assert outcomes[-1][2] == 0
    assert ProviderBreaker.objects.get(pk="cielo").state == "open"
