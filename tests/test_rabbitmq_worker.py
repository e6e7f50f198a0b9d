"""Celery on RabbitMQ: real worker processes take authorizations from RabbitMQ (127.0.0.1:5672,
guest/guest, or CELERY_TEST_AMQP_URL) and capture every payment exactly once, including when the
first worker is SIGKILLed mid-run (acks_late + reject_on_worker_lost: RabbitMQ hands the
unacknowledged message to the next worker). Skips, saying why, where RabbitMQ does not answer."""

from __future__ import annotations

import os
import signal
import socket
import uuid
from urllib.parse import urlsplit

import pytest
from kombu import Connection

from payments.models import Payment
from payments.tasks import payment_authorize
from tests.celery_workers import start_worker, stop_workers, wait_for

AMQP_URL = os.environ.get("CELERY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _rabbitmq_answers() -> bool:
    parts = urlsplit(AMQP_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=1).close()
    except OSError:
        return False
    try:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


pytestmark = [
    pytest.mark.slow, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not _rabbitmq_answers(), reason=f"RabbitMQ does not answer at {AMQP_URL}"),
]


def test_payments_through_rabbitmq_are_captured_once_even_when_a_worker_is_killed(api):
    # This run's own queue: another run sharing the RabbitMQ server never takes its tasks.
    queue = f"providers-test-{uuid.uuid4().hex[:12]}"
    payments = []
    for index in range(12):
        created = api.post("/payments", {"amount": 1000 + index, "currency": "usd",
                                         "payment_method": "pm_card_visa", "confirm": True})
        assert created.status_code == 202, created.content
        payments.append(Payment.objects.get(pk=created.json()["id"]))
    with Connection(AMQP_URL) as conn:
        for payment in payments:
            payment_authorize.apply_async((payment.attempts.get().id,), connection=conn,
                                          queue=queue, routing_key=queue)
    workers = {}
    try:
        first = start_worker(f"amqp-a-{os.getpid()}", broker_url=AMQP_URL,
                             simulator_url="http://127.0.0.1:9", queues=queue)
        workers[first.pid] = first

        def captured() -> int:
            return Payment.objects.filter(pk__in=[p.pk for p in payments],
                                          status="captured").count()

        wait_for(lambda: captured() >= 3, 120, "the first captures over RabbitMQ", workers)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        del workers[first.pid]
        second = start_worker(f"amqp-b-{os.getpid()}", broker_url=AMQP_URL,
                              simulator_url="http://127.0.0.1:9", queues=queue)
        workers[second.pid] = second
        wait_for(lambda: captured() == len(payments), 180, "every payment captured", workers)
    finally:
        stop_workers(workers)
        with Connection(AMQP_URL) as conn:
            conn.default_channel.queue_delete(queue)
    for payment in payments:
        payment.refresh_from_db()
        assert payment.status == "captured" and payment.amount_captured == payment.amount
        attempts = list(payment.attempts.all())
        assert len(attempts) == 1 and attempts[0].status == "approved", attempts
