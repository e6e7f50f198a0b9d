"""The worker path end to end on every broker we ship for: a real `celery worker` process takes
the authorization task from kombu's filesystem transport (no server: `make test`'s default), a
Redis server or RabbitMQ, and captures the payment."""

from __future__ import annotations

import os

import pytest

from config.celery_app import QUEUES, broker_options, task_queues
from payments.models import Payment
from payments.tasks import payment_authorize
from tests.celery_workers import broker, enqueue, start_worker, stop_workers, wait_for

__all__ = ["broker"]  # the fixture, used by name


@pytest.mark.parametrize("broker", ["filesystem", "redis", "amqp"], indirect=True)
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_process_captures_a_confirmed_payment(api, broker):
    created = api.post("/payments", {"amount": 4200, "currency": "gbp",
                                     "payment_method": "pm_card_visa", "confirm": True})
    assert created.status_code == 202
    payment = Payment.objects.get(pk=created.json()["id"])
    attempt = payment.attempts.get()
    enqueue(payment_authorize, broker, args=[attempt.id])

    worker = start_worker(f"e2e-{broker.kind}-{os.getpid()}", broker=broker,
                          simulator_url="http://127.0.0.1:9")
    workers = {worker.pid: worker}
    try:
        wait_for(lambda: Payment.objects.get(pk=payment.pk).status != "authorization_requested",
                 60, "the worker's capture", workers)
    finally:
        stop_workers(workers)
    payment.refresh_from_db()
    assert payment.status == "captured"
    assert payment.amount_captured == 4200
    assert payment.attempts.get().status == "approved"


def test_on_rabbitmq_the_queues_are_durable_quorum_queues_elsewhere_plain():
    # Publisher and worker both declare them from this one function (a queue re-declared with
    # other arguments is refused by RabbitMQ); the quorum type is what survives a node loss.
    amqp = task_queues("amqp://guest:guest@rabbitmq:5672/clearhouse")
    assert [(q.name, q.durable, q.queue_arguments, q.exchange.type) for q in amqp] == [
        (name, True, {"x-queue-type": "quorum"}, "topic") for name in QUEUES]
    redis = task_queues("redis://127.0.0.1:6379/0")
    assert [(q.name, q.queue_arguments) for q in redis] == [(name, None) for name in QUEUES]
    # Redis's visibility timeout is Redis's alone; on RabbitMQ a worker that lost its connection
    # stops the tasks RabbitMQ has already handed to another worker.
    assert broker_options("amqp://rabbitmq/clearhouse", {}) == {
        "worker_cancel_long_running_tasks_on_connection_loss": True}
    assert broker_options("redis://redis:6379/1", {"max_connections": 20}) == {
        "broker_transport_options": {"visibility_timeout": 600, "max_connections": 20}}
    assert broker_options("filesystem://", {"data_folder_in": "q"}) == {}
