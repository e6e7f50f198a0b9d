"""Prometheus metrics at `/metrics`: counters and histograms updated where things happen, and
gauges each app registers (`gauge_register`) read from the database at scrape time (so every web
process reports the same truth).

Protected by `METRICS_TOKEN` (`Authorization: Bearer <token>`), required in production. With
`PROMETHEUS_MULTIPROC_DIR` set (before the process starts) every process writes its counters to
that directory and `/metrics` sums them: each gunicorn worker's, and the Celery workers' when
they share the directory (the authorizations and webhook deliveries happen there). Files are
named by host and pid, so containers sharing one volume never write to the same file.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from core.queues import queue_depths

logger = logging.getLogger(__name__)


def process_identifier(pid: int | None = None) -> str:
    """This process's name in PROMETHEUS_MULTIPROC_DIR: host and pid (no underscore, which
    prometheus_client's file names use as a separator)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    return f"{host}-{os.getpid() if pid is None else pid}"


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Before any metric exists: prometheus_client names files by pid alone, and pid 7 of the
    # web container and pid 7 of a worker container would write to one file on a shared volume.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    values.ValueClass = values.MultiProcessValue(process_identifier)


def process_dead(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges (its counters stay summed)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(process_identifier(pid))


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
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_REQUESTS = Counter("clearhouse_http_requests_total", "HTTP requests answered",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("clearhouse_http_request_duration_seconds",
                          "Time to answer an HTTP request, by route", ["method", "route"],
                          buckets=_LATENCY_BUCKETS)
DB_QUERY_DURATION = Histogram("clearhouse_db_query_duration_seconds",
                              "Time PostgreSQL took per statement, seen from the client",
                              ["alias", "statement"],
                              buckets=(0.0005, 0.001, 0.0025, *_LATENCY_BUCKETS))
TASKS = Counter("clearhouse_celery_tasks_total", "Celery tasks finished, by task and state",
                ["task", "state"])  # success | failure | retry
TASK_DURATION = Histogram("clearhouse_celery_task_duration_seconds",
                          "Time a Celery task ran in the worker", ["task"],
                          buckets=_LATENCY_BUCKETS)
# Every counter and histogram above: what a single process reports without the multiprocess
# directory, and what the alert rules may name besides the registered gauges.
PROCESS_METRICS = (IDEMPOTENCY, PROVIDER_CALLS, PROVIDER_LATENCY, WEBHOOK_DELIVERIES,
                   INBOUND_REJECTED, RATE_LIMIT_FAIL_OPEN, RATE_LIMITED, HTTP_REQUESTS,
                   HTTP_DURATION, DB_QUERY_DURATION, TASKS, TASK_DURATION)


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
        for collector in PROCESS_METRICS:
            yield from collector.collect()


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def metric_labels() -> dict[str, set[str]]:
    """Every series name `/metrics` can report, with its label names (the alert rules in
    deploy/prometheus/alerts.yml must name only these; tests/test_alert_rules.py checks)."""
    series = {name: set(gauge.labels) for name, gauge in _GAUGES.items()}
    for collector in PROCESS_METRICS:
        for family in collector.describe():
            for suffix in _SUFFIXES[family.type]:
                series[family.name + suffix] = set(collector._labelnames) | (
                    {"le"} if suffix == "_bucket" else set())
    return series


def _route(request: HttpRequest) -> str:
    """A bounded label: the URL pattern matched, never the path with its ids."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "<static>" if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")) else (
            "<unmatched>")
    route = match.route or match.view_name or "<unnamed>"
    if route.startswith(settings.ADMIN_URL):  # the admin's address stays out of the metrics
        route = "<admin>/" + route.removeprefix(settings.ADMIN_URL)
    return route


class HttpMetricsMiddleware:
    """Counts every answered request and times it, by method and URL pattern."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        route = _route(request)
        method = request.method if request.method in _METHODS else "other"
        HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        return response


_TASK_STARTED: dict[str, float] = {}


def task_started(task_id: str | None = None, **kwargs: object) -> None:
    """Celery's task_prerun (connected in config/celery_app.py)."""
    if task_id:
        _TASK_STARTED[task_id] = time.perf_counter()


def task_finished(task_id: str | None = None, task: Any = None, state: str | None = None,
                  **kwargs: object) -> None:
    """Celery's task_postrun: one count by final state, and the time it ran."""
    started = _TASK_STARTED.pop(task_id or "", None)
    name = getattr(task, "name", None) or "<unknown>"
    TASKS.labels(name, (state or "unknown").lower()).inc()
    if started is not None:
        TASK_DURATION.labels(name).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATEMENTS = ("select", "insert", "update", "delete", "with")


def _timed_statement(alias: str) -> Callable[..., Any]:
    # The labelled histograms looked up once per connection, not under .labels()'s lock on
    # every statement (figures in docs/OPERATIONS.md, "Metrics from every process").
    children = {kind: DB_QUERY_DURATION.labels(alias, kind) for kind in _STATEMENTS}
    other = DB_QUERY_DURATION.labels(alias, "other")

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                context: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            head = sql.lstrip()[:6].lower() if isinstance(sql, str) else ""
            (children.get(head) or children.get(head[:4], other)).observe(elapsed)

    wrapper.clearhouse_timing = True  # type: ignore[attr-defined]
    return wrapper


def database_timing(sender: object, connection: Any, **kwargs: object) -> None:
    """connection_created: time each statement of this connection (once per connection
    object, which Django reconnects in place)."""
    if not any(getattr(w, "clearhouse_timing", False) for w in connection.execute_wrappers):
        connection.execute_wrappers.append(_timed_statement(connection.alias))


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return HttpResponse("metrics need `Authorization: Bearer <METRICS_TOKEN>`\n",
                                status=401, content_type="text/plain")
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


__all__ = ["REGISTRY", "metrics_view"]
