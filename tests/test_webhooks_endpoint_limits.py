"""Per-endpoint delivery limits (issue 21): one merchant's dead endpoints cannot crowd out
another merchant's deliveries. Each endpoint has at most a few attempts in flight (counted and
claimed under its row lock in PostgreSQL), and a circuit: after failures in a row its
deliveries wait in the outbox, due, instead of being tried by every sweep and task."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from tests.factories import MerchantFactory
from tests.test_webhooks_support import GUARDED, subscribe
from tests.threads import run_threads
from webhooks import services
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint

pytestmark = GUARDED

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _refusing_url() -> str:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens here any more: connection refused
    return f"http://127.0.0.1:{port}/hook"


def _record(merchant, object_id: str = "pay_test") -> None:
    services.event_record(merchant=merchant, type="payment.captured",
                          obj={"id": object_id, "object": "payment", "amount": 1050})


def _dead_merchant_backlog(events: int) -> list[WebhookEndpoint]:
    """A merchant with three endpoints that refuse connections, owed `events` deliveries each,
    all due before anything else."""
    dead = MerchantFactory()
    endpoints = [services.endpoint_create(merchant=dead, url=_refusing_url(),
                                          enabled_events=["*"]).endpoint for _ in range(3)]
    with transaction.atomic():
        for index in range(events):
            _record(dead, object_id=f"pay_dead_{index}")
    return endpoints


def test_a_healthy_endpoint_is_served_in_the_first_batch_despite_three_dead_endpoints(
        merchant, receivers):
    with time_machine.travel(START, tick=False) as traveller:
        dead = _dead_merchant_backlog(100)  # 300 due deliveries, all older
        traveller.shift(timedelta(seconds=1))
        healthy = receivers()
        subscribe(merchant, healthy, ["payment.captured"])
        _record(merchant, object_id="pay_healthy")

        attempts = services.delivery_sweep(batch_size=10, concurrency=1)

    assert healthy.event_counts() and all(r.verified for r in healthy.received)
    first_batch = WebhookDeliveryAttempt.objects.order_by("started_at", "id")[:10]
    assert any(a.is_success for a in first_batch)
    # The dead endpoints were each tried a bounded number of times, then their circuits
    # opened: the sweep did not walk through their 300 deliveries.
    for endpoint in WebhookEndpoint.objects.filter(pk__in=[e.pk for e in dead]):
        tried = WebhookDeliveryAttempt.objects.filter(delivery__endpoint=endpoint).count()
        assert tried <= services.CIRCUIT_THRESHOLD + services.FAILING_MAX_IN_FLIGHT, tried
        assert endpoint.circuit_open_until is not None
        assert endpoint.consecutive_failures >= services.CIRCUIT_THRESHOLD
    assert attempts < 3 * (services.CIRCUIT_THRESHOLD + services.FAILING_MAX_IN_FLIGHT) + 1
    still_owed = WebhookDelivery.objects.filter(endpoint__in=dead, status=DeliveryStatus.PENDING)
    assert still_owed.count() == 300  # nothing given up: they wait for the circuit


def test_tasks_for_an_endpoint_whose_circuit_is_open_send_nothing_until_it_closes(merchant,
                                                                                  receivers):
    with time_machine.travel(START, tick=False) as traveller:
        issued = services.endpoint_create(merchant=merchant, url=_refusing_url(),
                                          enabled_events=["*"])
        with transaction.atomic():
            for index in range(20):
                _record(merchant, object_id=f"pay_{index}")
        ids = list(WebhookDelivery.objects.order_by("created_at", "pk")
                   .values_list("pk", flat=True))
        for delivery_id in ids:  # what the workers do with the enqueued tasks
            services.delivery_execute(delivery_id=delivery_id)
        endpoint = WebhookEndpoint.objects.get(pk=issued.endpoint.pk)
        assert endpoint.consecutive_failures == services.CIRCUIT_THRESHOLD
        assert endpoint.circuit_open_until > timezone.now()
        assert WebhookDeliveryAttempt.objects.count() == services.CIRCUIT_THRESHOLD

        # Open: a redelivered task or a sweep takes nothing.
        assert services.delivery_execute(delivery_id=ids[-1]) is False
        assert services.delivery_sweep(concurrency=1) == 0

        # The endpoint comes back; once the cool-down passed, one probe goes, then the rest.
        rx = receivers()
        rx.secrets.append(services.endpoint_signing_secrets(endpoint=endpoint,
                                                            now=timezone.now())[0])
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=rx.url)
        traveller.move_to(endpoint.circuit_open_until + timedelta(seconds=1))
        for row in WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING):
            # Their own backoff has passed too (the circuit is the later of the two here).
            assert row.next_attempt_at <= timezone.now() + timedelta(hours=1)
        traveller.shift(timedelta(hours=1))
        services.delivery_sweep(concurrency=1)

    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 0 and endpoint.circuit_open_until is None
    assert not WebhookDelivery.objects.exclude(status=DeliveryStatus.DELIVERED).exists()
    assert len(rx.received) == 20


def test_a_half_open_circuit_lets_exactly_one_probe_through(merchant):
    issued = services.endpoint_create(merchant=merchant, url=_refusing_url(),
                                      enabled_events=["*"])
    with transaction.atomic():
        for index in range(10):
            _record(merchant, object_id=f"pay_{index}")
    WebhookEndpoint.objects.filter(pk=issued.endpoint.pk).update(
        consecutive_failures=services.CIRCUIT_THRESHOLD,
        circuit_open_until=timezone.now() - timedelta(seconds=1))
    assert len(services._claim_due(limit=50, now=timezone.now())) == 1
    assert services._claim_due(limit=50, now=timezone.now()) == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_lease_more_than_the_endpoint_limit(merchant, settings):
    """Eight claimers at once (threads, each its own connection): the count is taken under the
    endpoint's row lock in PostgreSQL, so no interleaving leases more than the limit."""
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    failing = services.endpoint_create(merchant=merchant, url=_refusing_url(),
                                       enabled_events=["*"]).endpoint
    with transaction.atomic():
        for index in range(60):
            _record(merchant, object_id=f"pay_{index}")
    WebhookEndpoint.objects.filter(pk=failing.pk).update(consecutive_failures=1)
    results, errors = run_threads(8, lambda i: services._claim_due(limit=50, now=timezone.now()))
    claimed = [delivery for batch in results for delivery in batch]
    assert not errors
    assert len(claimed) == len(set(claimed)) == services.FAILING_MAX_IN_FLIGHT
    leased = WebhookDelivery.objects.filter(endpoint=failing, locked_until__gt=timezone.now())
    assert leased.count() == services.FAILING_MAX_IN_FLIGHT


def test_a_healthy_endpoint_has_at_most_the_endpoint_limit_in_flight(merchant, receivers):
    issued = subscribe(merchant, receivers(), ["payment.captured"])
    with transaction.atomic():
        for index in range(services.ENDPOINT_MAX_IN_FLIGHT + 5):
            _record(merchant, object_id=f"pay_{index}")
    now = timezone.now()
    first = services._claim_due(limit=services.ENDPOINT_MAX_IN_FLIGHT + 5, now=now)
    assert len(first) == services.ENDPOINT_MAX_IN_FLIGHT
    assert services._claim_due(limit=50, now=now) == []
    assert WebhookDelivery.objects.filter(endpoint=issued.endpoint,
                                          locked_until__isnull=True).count() == 5
