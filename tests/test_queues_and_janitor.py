"""Queues by purpose and a single-flight janitor (issue 21): authorizations, inbound notices,
webhook deliveries and reconciliation each have their own queue and worker, and the janitor is
guarded by a lock rather than an expiry, so a run that waited in the queue is never dropped."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from config.celery_app import QUEUES, app
from core.queues import queue_depths
from reconciliation import jobs
from reconciliation.services import SCHEDULED_JOBS
from tests.celery_workers import app_on, broker
from webhooks.tasks import webhook_deliver

__all__ = ["broker"]  # the fixture, used by name


@pytest.mark.parametrize(("task", "queue"), [
    ("payments.tasks.payment_authorize", "providers"),
    ("wallet.tasks.payout_refresh", "providers"),
    ("webhooks.tasks.provider_event_process", "inbound"),
    ("webhooks.tasks.provider_events_sweep", "inbound"),
    ("webhooks.tasks.webhook_deliver", "webhooks"),
    ("reconciliation.tasks.recon_janitor", "reconciliation"),
    ("reconciliation.tasks.webhooks_sweep", "webhooks"),
])
def test_each_task_goes_to_the_queue_of_its_purpose(task, queue):
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue
    assert queue in QUEUES


def test_a_worker_without_queue_options_serves_every_queue():
    assert {q.name for q in app.conf.task_queues} == set(QUEUES)


def test_the_janitor_beat_entry_never_expires():
    janitor = next(job for job in SCHEDULED_JOBS if job.name == "recon-janitor")
    assert janitor.expires_with_interval is False


@pytest.mark.django_db(transaction=True)
def test_a_second_janitor_while_one_runs_does_nothing_and_fails_nothing():
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"] or "postgres",
                            dbname=db["NAME"], autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [jobs.JANITOR_LOCK])  # "running" elsewhere
        assert jobs.janitor_job() is None
        other.execute("SELECT pg_advisory_unlock(%s)", [jobs.JANITOR_LOCK])
        run = jobs.janitor_job()
        assert run is not None and run.finished_at is not None
    finally:
        other.close()
    # The lock is released after a run: the next one runs too.
    assert jobs.janitor_job() is not None


@pytest.mark.django_db
def test_queue_depth_and_age_are_metrics_and_on_the_dashboard(broker, client, admin_client):
    """On each broker (a Redis server, a RabbitMQ vhost): three deliveries waiting in one
    queue, none yet declared in another (RabbitMQ refuses a passive declare of it)."""
    with app_on(broker):
        for index in range(3):
            webhook_deliver.delay(f"whd_{index}")
        text = client.get("/metrics").content.decode()
        assert 'clearhouse_queue_depth{queue="providers"} 0.0' in text
        assert 'clearhouse_queue_depth{queue="webhooks"} 3.0' in text
        assert 'clearhouse_queue_oldest_work_age_seconds{queue="providers"}' in text
        page = admin_client.get("/admin/").content.decode()
        assert 'id="bo-queues"' in page and "3 waiting" in page


@pytest.mark.django_db(transaction=True)
def test_a_confirmed_payment_publishes_its_authorization_to_the_broker(api):
    """At commit, to whichever broker the app is on: the in-memory one, or with
    CELERY_TEST_BROKER=amqp|redis the run's own RabbitMQ vhost or Redis server."""
    before = queue_depths()["providers"]
    created = api.post("/payments", {"amount": 1500, "currency": "usd",
                                     "payment_method": "pm_card_visa", "confirm": True})
    assert created.status_code == 202, created.content
    assert queue_depths()["providers"] == before + 1


@pytest.mark.parametrize("broker", ["filesystem"], indirect=True)
def test_the_in_memory_broker_still_publishes_after_a_test_pointed_the_app_elsewhere(broker):
    """kombu keeps one connection pool per broker for the whole process: app_on used to close
    the in-memory broker's pool in place, so every later test on that pytest worker failed to
    enqueue ("Acquire on closed pool") and its payments stayed authorization_requested."""
    webhook_deliver.delay("whd_before")  # the in-memory broker's pool is now in use
    with app_on(broker):
        webhook_deliver.delay("whd_elsewhere")
    webhook_deliver.delay("whd_after")
