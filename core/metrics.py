"""Prometheus metrics at `/metrics`: counters and histograms updated where things happen, and
gauges each app registers (`gauge_register`) read from the database at scrape time (so every web
process reports the same truth).

Protected by `METRICS_TOKEN` (`Authorization: Bearer <token>`), required in production. Under
gunicorn with several workers set `PROMETHEUS_MULTIPROC_DIR` so counters are summed across
processes (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import DurationField, ExpressionWrapper, Min, QuerySet
from django.db.models.functions import Now
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


@dataclass
class _Gauge:
    documentation: str
    labels: list[str]
    reads: list[Callable[[], Iterable[tuple[Sequence[str], float]]]] = field(
        default_factory=list)


_GAUGES: dict[str, _Gauge] = {}


def gauge_register(name: str, documentation: str, labels: Sequence[str],
                   read: Callable[[], Iterable[tuple[Sequence[str], float]]]) -> None:
    """Have `/metrics` report `read()`'s (label values, value) pairs at scrape time. Apps
    register from `AppConfig.ready`, each reading its own tables through its selectors (core
    reads no app's tables); several apps may feed one gauge with different label values."""
    gauge = _GAUGES.setdefault(name, _Gauge(documentation, list(labels)))
    if read not in gauge.reads:
        gauge.reads.append(read)


def oldest_age_seconds(rows: QuerySet, column: str) -> float:
    """Seconds from the oldest `column` among `rows` to the database's now (0 with no rows)."""
    age = rows.aggregate(age=ExpressionWrapper(Now() - Min(column),
                                               output_field=DurationField()))["age"]
    return age.total_seconds() if age is not None else 0.0


def oldest_work_register(queue: str, read_seconds: Callable[[], float]) -> None:
    """Report the age of the oldest work item `queue` exists for (`read_seconds()`)."""
    gauge_register("clearhouse_queue_oldest_work_age_seconds",
                   "Age of the oldest work item each queue exists for (attempts not yet sent, "
                   "notices not yet applied, deliveries past due)", ["queue"],
                   lambda: [((queue,), read_seconds())])


def _queue_depths() -> Iterator[tuple[Sequence[str], float]]:
    for name, count in queue_depths().items():
        if count is not None:
            yield [name], count


gauge_register("clearhouse_queue_depth", "Task messages waiting per queue", ["queue"],
               _queue_depths)


class DatabaseCollector(Collector):
    """Gauges computed at scrape time from what the apps registered (index-backed reads)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, gauge in _GAUGES.items():
            family = GaugeMetricFamily(name, gauge.documentation, labels=gauge.labels)
            for read in gauge.reads:
                try:
                    for labels, value in read():
                        family.add_metric(list(labels), value)
                except Exception:  # a scrape must never break because one table is missing
                    logger.exception("metrics: reading %s failed", name)
            yield family


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
