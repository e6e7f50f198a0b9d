"""Prometheus metrics at `/metrics`: counters and histograms updated where things happen, and
gauges read from the database at scrape time (so every web process reports the same truth).

Protected by `METRICS_TOKEN` (`Authorization: Bearer <token>`), required in production. Under
gunicorn with several workers set `PROMETHEUS_MULTIPROC_DIR` so counters are summed across
processes (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from core.queues import queue_depths

logger = logging.getLogger(__name__)

IDEMPOTENCY = Counter("clearhouse_idempotency_total",
                      "Idempotency-Key outcomes other than a first request",
                      ["outcome"])  # replayed | in_flight | mismatch
PROVIDER_CALLS = Counter("clearhouse_provider_calls_total", "Provider calls by outcome",
                         ["provider", "operation", "outcome", "error_code"])
PROVIDER_LATENCY = Histogram("clearhouse_provider_latency_seconds", "Provider call latency",
                             ["provider", "operation"],
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WEBHOOK_DELIVERIES = Counter("clearhouse_webhook_delivery_attempts_total",
                             "Outbound webhook delivery attempts", ["outcome"])
INBOUND_REJECTED = Counter("clearhouse_inbound_webhooks_rejected_total",
                           "Provider webhooks rejected for a bad signature or stale timestamp",
                           ["provider"])
RATE_LIMIT_FAIL_OPEN = Counter("clearhouse_rate_limiter_fail_open_total",
                               "Requests let through because the rate limiter was unreachable")
RATE_LIMITED = Counter("clearhouse_rate_limited_total", "Requests answered 429", ["kind"])


_OLDEST_WORK = {
    "providers": "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) "
                 "FROM payments_paymentattempt WHERE status = 'requested'",
    "inbound": "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(received_at)), 0) "
               "FROM webhooks_providerevent WHERE status = 'pending'",
    "webhooks": "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)), 0) "
                "FROM webhooks_webhookdelivery WHERE status = 'pending' "
                "AND next_attempt_at <= now()",
}


def _rows(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


class DatabaseCollector(Collector):
    """Gauges computed from PostgreSQL at scrape time; each query is an index-backed aggregate."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield from self._collect()
        except Exception:  # a scrape must never break because one table is missing or slow
            logger.exception("metrics: database collector failed")

    def _collect(self) -> Iterator[GaugeMetricFamily]:
        payments = GaugeMetricFamily("clearhouse_payments", "Payments by status and provider",
                                     labels=["status", "provider"])
        for status, provider, count in _rows(
                "SELECT status, provider, count(*) FROM payments_payment GROUP BY 1, 2"):
            payments.add_metric([status, provider or "none"], count)
        yield payments
        awaiting = GaugeMetricFamily("clearhouse_payments_awaiting_reconciliation",
                                     "Payments authorization_requested with an unknown answer")
        awaiting.add_metric([], _rows(
            "SELECT count(DISTINCT payment_id) FROM payments_paymentattempt "
            "WHERE status = 'unknown'")[0][0])
        yield awaiting
        breaker = GaugeMetricFamily("clearhouse_provider_breaker_open",
                                    "1 when the provider's circuit breaker is not closed",
                                    labels=["provider", "state"])
        for provider, state in _rows("SELECT provider, state FROM providers_providerbreaker"):
            breaker.add_metric([provider, state], 0 if state == "closed" else 1)
        yield breaker
        queue = GaugeMetricFamily("clearhouse_webhook_queue", "Pending outbound deliveries",
                                  labels=["measure"])
        pending, oldest = _rows(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) "
            "FROM webhooks_webhookdelivery WHERE status = 'pending'")[0]
        queue.add_metric(["count"], pending)
        queue.add_metric(["oldest_age_seconds"], float(oldest))
        yield queue
        inbox = GaugeMetricFamily("clearhouse_provider_inbox", "Inbound provider events",
                                  labels=["status"])
        for status, count in _rows(
                "SELECT status, count(*) FROM webhooks_providerevent "
                "WHERE status <> 'processed' GROUP BY 1"):
            inbox.add_metric([status], count)
        yield inbox
        age = GaugeMetricFamily(
            "clearhouse_queue_oldest_work_age_seconds",
            "Age of the oldest work item each queue exists for (attempts not yet sent, notices "
            "not yet applied, deliveries past due)", labels=["queue"])
        for name, sql in _OLDEST_WORK.items():
            age.add_metric([name], float(_rows(sql)[0][0]))
        yield age
        depth = GaugeMetricFamily("clearhouse_queue_depth", "Task messages waiting per queue",
                                  labels=["queue"])
        for name, count in queue_depths().items():
            if count is not None:
                depth.add_metric([name], count)
        yield depth
        yield from _reconciliation_gauges()


def _reconciliation_gauges() -> Iterator[GaugeMetricFamily]:
    tables = {row[0] for row in _rows(
        "SELECT tablename FROM pg_tables WHERE tablename IN "
        "('reconciliation_reconciliationbreak', 'reconciliation_jobrun')")}
    if "reconciliation_reconciliationbreak" in tables:
        breaks = GaugeMetricFamily("clearhouse_reconciliation_breaks_open",
                                   "Open reconciliation breaks by type", labels=["type"])
        for kind, count in _rows("SELECT type, count(*) FROM reconciliation_reconciliationbreak"
                                 " WHERE status = 'open' GROUP BY 1"):
            breaks.add_metric([kind], count)
        yield breaks
    if "reconciliation_jobrun" in tables:
        runs = GaugeMetricFamily("clearhouse_job_last_run",
                                 "The latest run of each scheduled job",
                                 labels=["job", "measure"])
        for job, examined, fixed, broken, failed, age in _rows(
                "SELECT DISTINCT ON (job) job, examined, fixed, broken, "
                "(error <> '')::int, EXTRACT(EPOCH FROM now() - started_at) "
                "FROM reconciliation_jobrun ORDER BY job, started_at DESC"):
            for measure, value in (("examined", examined), ("fixed", fixed),
                                   ("broken", broken), ("failed", failed),
                                   ("age_seconds", float(age))):
                runs.add_metric([job, measure], value)
        yield runs


_DATABASE_COLLECTOR = DatabaseCollector()


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessCounters())
    registry.register(_DATABASE_COLLECTOR)
    return registry


class _ProcessCounters(Collector):
    """This process's own counters and histograms (single-process mode)."""

    def collect(self):  # type: ignore[no-untyped-def]
        for collector in (IDEMPOTENCY, PROVIDER_CALLS, PROVIDER_LATENCY, WEBHOOK_DELIVERIES,
                          INBOUND_REJECTED, RATE_LIMIT_FAIL_OPEN, RATE_LIMITED):
            yield from collector.collect()


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need `Authorization: Bearer <METRICS_TOKEN>`\n",
                                status=401, content_type="text/plain")
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


__all__ = ["REGISTRY", "metrics_view"]
