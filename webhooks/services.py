"""Writes for events, webhook endpoints and the delivery outbox.

The outbox: `event_record` runs inside the caller's transaction and writes one WebhookDelivery
per subscribed endpoint next to the Event, so a delivery exists exactly when the change does.
After commit a Celery task is asked to send each one; if that enqueue is lost (broker down,
process killed between commit and enqueue) the sweeper finds the row by `next_attempt_at` and
sends it. Sending happens in three steps so no lock or transaction spans the network call:
claim (a lease in `locked_until`, within the endpoint's limits, taken under its row lock),
send (webhooks.delivery, no database), record (attempt row, then retry time or final status).
Delivery is at least once: a worker that dies after sending but before recording is retried
when its lease ends, which is why every payload carries the event id for de-duplication.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core import crypto, metrics, versions
from core.errors import InvalidRequest, StateError
from core.events import event_type_check
from core.idempotency import same_request_or_422
from core.models import Merchant
from core.selectors import one_or_404
from core.transactions import task_send
from webhooks import delivery, selectors, ssrf
from webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    Event,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
)
from webhooks.payloads import endpoint_to_dict, event_to_dict

logger = logging.getLogger(__name__)

MAX_ENDPOINTS_PER_MERCHANT = 16  # also bounds the fan-out one event can cause
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
RETRY_WINDOW = timedelta(days=3)  # a delivery is retried this long after it was created
DISABLE_AFTER = timedelta(days=3)  # an endpoint failing without a success this long is disabled
BACKOFF_BASE_SECONDS = 60
BACKOFF_MAX_SECONDS = 6 * 3600
# A claim's lease must outlast a whole sweep batch: batch / concurrency sends of at most
# ~20 s each (DNS + connect 3 s + write 5 s + read 5 s + body 5 s). 50 / 8 → 7 × 20 s < 300 s.
LEASE = timedelta(minutes=5)
SWEEP_BATCH_SIZE = 50
SWEEP_CONCURRENCY = 8
# Per-endpoint limits, so one merchant's dead endpoints cannot take the workers and sweeps that
# every other merchant's deliveries need. "In flight" is a delivery whose lease is held; it is
# counted and claimed under the endpoint's row lock (_claim_due), so PostgreSQL, not a
# process's memory, enforces it across workers. An endpoint that answers may have four
# sweepers' batches leased at once (so a healthy backlog drains at full speed); one whose latest
# attempt failed, two; after CIRCUIT_THRESHOLD failures in a row its circuit opens and its
# deliveries wait, due, in the outbox (no task or sweep touches them) for a cool-down that
# doubles with each failed probe; then one probe at a time until one succeeds.
ENDPOINT_MAX_IN_FLIGHT = 4 * SWEEP_BATCH_SIZE
FAILING_MAX_IN_FLIGHT = 2
CIRCUIT_THRESHOLD = 5
CIRCUIT_COOLDOWN_SECONDS = 30
CIRCUIT_COOLDOWN_MAX_SECONDS = 15 * 60
ENDPOINT_DISABLED_EVENT = "webhook_endpoint.disabled"


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once in the response, stored only encrypted


# -- endpoints -----------------------------------------------------------------------------
def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _vet_url(url: str) -> None:
    """Creation-time check; delivery checks again, since DNS may change in between."""
    try:
        ssrf.vet_url(url)
    except ssrf.UnsafeUrl as exc:
        raise InvalidRequest(str(exc), code=exc.code, param="url") from exc


def _lock_endpoint(*, merchant: Merchant, endpoint_id: str) -> WebhookEndpoint:
    return one_or_404(WebhookEndpoint.objects.select_for_update()
                      .filter(merchant=merchant, deleted_at__isnull=True), endpoint_id,
                      noun="webhook endpoint")


def _disable(endpoint: WebhookEndpoint, *, reason: str, now: datetime) -> None:
    """Mark disabled and give up on what it was still owed (the merchant can resend events).
    Caller holds the endpoint's row lock and saves it."""
    endpoint.status = EndpointStatus.DISABLED
    endpoint.disabled_reason = reason
    WebhookDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, next_attempt_at=None, locked_until=None, completed_at=now,
        last_error=f"endpoint disabled: {reason}"[:500],
    )


def endpoint_create(*, merchant: Merchant, url: str, enabled_events: list[str],
                    description: str = "", api_version: str | None = None,
                    idempotency_key: str = "", idempotency_fingerprint: str = ""
                    ) -> IssuedEndpoint:
    """A new endpoint, delivering in `api_version` (default: the merchant's pinned version)."""
    _vet_url(url)  # DNS outside the transaction
    secret = _new_secret()
    try:
        with transaction.atomic():
            endpoint = WebhookEndpoint.objects.create(
                merchant=merchant, url=url, enabled_events=enabled_events,
                description=description, secret_encrypted=crypto.encrypt(secret),
                api_version=api_version or merchant.api_version,
                idempotency_key=idempotency_key, idempotency_fingerprint=idempotency_fingerprint,
            )
            # Counted after the insert, so that a retry of a create that already committed
            # finds its endpoint (below) rather than the limit.
            if selectors.endpoint_list(merchant=merchant).count() > MAX_ENDPOINTS_PER_MERCHANT:
                # 409 like insufficient funds: the request is fine, the account is full.
                raise StateError(
                    f"An account may have at most {MAX_ENDPOINTS_PER_MERCHANT} webhook "
                    "endpoints; delete one first.", code="endpoint_limit_reached")
    except IntegrityError:
        # The unique (merchant, idempotency_key): the key already made an endpoint (its own row
        # reaped, or the first request died after committing). The same request gets that
        # endpoint with its current secret (the caller may never have seen it); other
        # parameters get 422.
        existing = WebhookEndpoint.objects.filter(
            merchant=merchant, idempotency_key=idempotency_key).first()
        if not idempotency_key or existing is None:
            raise
        endpoint = same_request_or_422(existing, idempotency_fingerprint)
        return IssuedEndpoint(endpoint=endpoint,
                              secret=crypto.decrypt(endpoint.secret_encrypted))
    return IssuedEndpoint(endpoint=endpoint, secret=secret)


def endpoint_update(*, merchant: Merchant, endpoint_id: str, url: str | None = None,
                    enabled_events: list[str] | None = None, description: str | None = None,
                    disabled: bool | None = None) -> WebhookEndpoint:
    selectors.endpoint_get(merchant=merchant, endpoint_id=endpoint_id)  # 404 before 400
    if url is not None:
        _vet_url(url)
    with transaction.atomic():
        endpoint = _lock_endpoint(merchant=merchant, endpoint_id=endpoint_id)
        if url is not None:
            endpoint.url = url
        if enabled_events is not None:
            endpoint.enabled_events = enabled_events
        if description is not None:
            endpoint.description = description
        if disabled is True and endpoint.status == EndpointStatus.ENABLED:
            _disable(endpoint, reason="disabled by the merchant", now=timezone.now())
        elif disabled is False and endpoint.status == EndpointStatus.DISABLED:
            endpoint.status = EndpointStatus.ENABLED
            endpoint.disabled_reason = ""
            endpoint.failing_since = None  # a fresh start: the 3-day clock restarts
            endpoint.consecutive_failures = 0  # and its circuit closes
            endpoint.circuit_open_until = None
        endpoint.save()
    return endpoint


def endpoint_delete(*, merchant: Merchant, endpoint_id: str) -> WebhookEndpoint:
    with transaction.atomic():
        endpoint = _lock_endpoint(merchant=merchant, endpoint_id=endpoint_id)
        now = timezone.now()
        _disable(endpoint, reason="deleted", now=now)
        endpoint.deleted_at = now
        endpoint.save()
    return endpoint


def endpoint_rotate_secret(*, merchant: Merchant, endpoint_id: str,
                           expires_in: int | None = None) -> IssuedEndpoint:
    """New signing secret now; the old one keeps signing too for `expires_in` seconds (default
    24 h) so the merchant can deploy the new one without rejecting anything meanwhile."""
    overlap = DEFAULT_ROTATION_OVERLAP if expires_in is None else timedelta(seconds=expires_in)
    secret = _new_secret()
    with transaction.atomic():
        endpoint = _lock_endpoint(merchant=merchant, endpoint_id=endpoint_id)
        if overlap > timedelta(0):
            # Only one previous secret: rotating again during an overlap drops the oldest.
            endpoint.previous_secret_encrypted = endpoint.secret_encrypted
            endpoint.previous_secret_expires_at = timezone.now() + overlap
        else:
            endpoint.previous_secret_encrypted = ""
            endpoint.previous_secret_expires_at = None
        endpoint.secret_encrypted = crypto.encrypt(secret)
        endpoint.save()
    return IssuedEndpoint(endpoint=endpoint, secret=secret)


def endpoint_signing_secrets(*, endpoint: WebhookEndpoint, now: datetime) -> tuple[str, ...]:
    """The secrets a delivery is signed with now: current, plus previous during its overlap."""
    current = crypto.decrypt(endpoint.secret_encrypted)
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        return (current, crypto.decrypt(endpoint.previous_secret_encrypted))
    return (current,)


def endpoint_disable_failing(*, endpoint_id: str) -> WebhookEndpoint | None:
    """Disable an endpoint that has failed without a success for DISABLE_AFTER, and record a
    `webhook_endpoint.disabled` event. Re-checks under the row lock; None if nothing changed."""
    with transaction.atomic():
        endpoint = (WebhookEndpoint.objects.select_for_update()
                    .filter(pk=endpoint_id, status=EndpointStatus.ENABLED,
                            deleted_at__isnull=True).first())
        now = timezone.now()
        if (endpoint is None or endpoint.failing_since is None
                or endpoint.failing_since > now - DISABLE_AFTER):
            return None
        _disable(endpoint, reason="every delivery failed for 3 days", now=now)
        endpoint.save()
        event_record(merchant=endpoint.merchant, type=ENDPOINT_DISABLED_EVENT,
                     obj=endpoint_to_dict(endpoint))
    logger.warning("disabled webhook endpoint %s: failing since %s", endpoint.id,
                   endpoint.failing_since.isoformat())
    return endpoint


# -- events and the outbox -------------------------------------------------------------------
def _enqueue(delivery_ids: list[str]) -> None:
    """After commit: ask a worker to send each delivery. A failure here loses nothing, as the
    rows are committed and due; the sweeper sends them."""
    for index, delivery_id in enumerate(delivery_ids):
        more = len(delivery_ids) - index - 1
        if not task_send("webhooks.tasks.webhook_deliver", delivery_id,
                         what=f"webhook delivery {delivery_id} (+{more} more)",
                         fallback="the sweeper will send them"):
            return  # the broker is likely down and each try may block


def _deliveries_create(*, event: Event, endpoint_ids: list[str]) -> list[WebhookDelivery]:
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create([
        WebhookDelivery(endpoint_id=endpoint_id, event=event, next_attempt_at=now)
        for endpoint_id in endpoint_ids
    ])
    transaction.on_commit(functools.partial(_enqueue, [d.pk for d in deliveries]), robust=True)
    return deliveries


def event_record(*, merchant: Merchant, type: str, obj: dict[str, Any]) -> Event:
    """Record that `type` happened to `obj` (its API representation). Call inside the
    transaction that made the change, so the event and its deliveries exist exactly when the
    change does. The type must be in the catalogue (core.events)."""
    event_type_check(type, obj)
    with transaction.atomic(savepoint=False):
        event = Event.objects.create(
            merchant=merchant, type=type, object_type=obj["object"], object_id=obj["id"],
            data=obj,
        )
        endpoint_ids = selectors.endpoint_ids_subscribed(merchant=merchant, type=type)
        if endpoint_ids:
            _deliveries_create(event=event, endpoint_ids=endpoint_ids)
    return event


def event_resend(*, merchant: Merchant, event_id: str, endpoint_id: str | None = None
                 ) -> list[WebhookDelivery]:
    """New deliveries of an old event: to one endpoint, or to every enabled endpoint that is
    subscribed to its type now."""
    event = selectors.event_get(merchant=merchant, event_id=event_id)
    if endpoint_id is not None:
        endpoint = selectors.endpoint_get(merchant=merchant, endpoint_id=endpoint_id,
                                          param="endpoint")
        if endpoint.status != EndpointStatus.ENABLED:
            raise StateError(f"Webhook endpoint '{endpoint.id}' is disabled; enable it first.",
                             code="endpoint_disabled", param="endpoint")
        endpoint_ids = [endpoint.id]
    else:
        endpoint_ids = selectors.endpoint_ids_subscribed(merchant=merchant, type=event.type)
    if not endpoint_ids:
        return []
    with transaction.atomic():
        return _deliveries_create(event=event, endpoint_ids=endpoint_ids)


# -- sending ---------------------------------------------------------------------------------
# -- claiming: the outbox's limits per endpoint ---------------------------------------------
_DELIVERY = WebhookDelivery._meta.db_table
_ENDPOINT = WebhookEndpoint._meta.db_table
# Due, pending, not leased, and one of %(ids)s when that is not NULL: what a claim may take.
_DUE = (f"d.status = '{DeliveryStatus.PENDING}' AND d.next_attempt_at <= %(now)s "
        "AND (d.locked_until IS NULL OR d.locked_until < %(now)s) "
        "AND (%(ids)s::text[] IS NULL OR d.id = ANY(%(ids)s::text[]))")
_CLOSED = "(e.circuit_open_until IS NULL OR e.circuit_open_until <= %(now)s)"
_CANDIDATES_SQL = f"""
    SELECT d.endpoint_id FROM {_DELIVERY} d JOIN {_ENDPOINT} e ON e.id = d.endpoint_id
    WHERE {_DUE} AND {_CLOSED}
    GROUP BY d.endpoint_id ORDER BY min(d.next_attempt_at) LIMIT %(limit)s"""  # noqa: S608
_LOCK_SQL = f"""
    SELECT e.id FROM {_ENDPOINT} e WHERE e.id = ANY(%(candidates)s::text[]) AND {_CLOSED}
    ORDER BY e.id FOR NO KEY UPDATE"""  # noqa: S608
_LEASE_SQL = f"""
    WITH slots AS (
        SELECT e.id, CASE WHEN e.consecutive_failures = 0 THEN %(max)s
                          WHEN e.consecutive_failures < %(threshold)s THEN %(failing)s
                          ELSE 1 END
            - (SELECT count(*) FROM {_DELIVERY} leased
               WHERE leased.endpoint_id = e.id AND leased.status = '{DeliveryStatus.PENDING}'
                 AND leased.locked_until >= %(now)s) AS free
        FROM {_ENDPOINT} e WHERE e.id = ANY(%(locked)s::text[])
    ), ranked AS (
        SELECT d.id, d.next_attempt_at, s.free, row_number() OVER (
            PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS rank
        FROM {_DELIVERY} d JOIN slots s ON s.id = d.endpoint_id
        WHERE {_DUE} AND s.free > 0
    ), chosen AS (
        SELECT id FROM ranked WHERE rank <= free ORDER BY rank, next_attempt_at, id
        LIMIT %(limit)s
    )
    UPDATE {_DELIVERY} d SET locked_until = %(until)s, attempt_count = d.attempt_count + 1
    FROM chosen WHERE d.id = chosen.id
    RETURNING d.id"""  # noqa: S608


def _claim_due(*, limit: int, now: datetime, delivery_ids: list[str] | None = None
               ) -> list[str]:
    """Take the lease on up to `limit` due deliveries (of `delivery_ids` only, when given),
    within each endpoint's limits (ENDPOINT_MAX_IN_FLIGHT, FAILING_MAX_IN_FLIGHT, the
    circuit), each endpoint's oldest first and every endpoint's first before anyone's second.

    Three statements in one transaction: pick the endpoints with due work whose circuit is not
    open; lock them (FOR NO KEY UPDATE, in id order: another claimer of the same endpoint
    waits, and no KEY SHARE lock of a payment transaction inserting a delivery is blocked);
    then count each one's leases and lease what fits. The count is its own statement, so its
    snapshot is taken after the locks are held and sees every lease committed before them."""
    params = {"now": now, "ids": delivery_ids, "limit": limit, "until": now + LEASE,
              "max": ENDPOINT_MAX_IN_FLIGHT, "failing": FAILING_MAX_IN_FLIGHT,
              "threshold": CIRCUIT_THRESHOLD}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CANDIDATES_SQL, params)
        candidates = sorted(row[0] for row in cursor.fetchall())
        if not candidates:
            return []
        cursor.execute(_LOCK_SQL, {**params, "candidates": candidates})
        locked = [row[0] for row in cursor.fetchall()]
        if not locked:
            return []
        cursor.execute(_LEASE_SQL, {**params, "locked": locked})
        return [row[0] for row in cursor.fetchall()]


def _claim(*, delivery_id: str, now: datetime) -> bool:
    """Take the lease on one due delivery, within its endpoint's limits (a task's path: the
    same rule as the sweeper's). False if it is not due, leased elsewhere, or its endpoint
    has no room or an open circuit; the sweeper sends it later."""
    return _claim_due(limit=1, now=now, delivery_ids=[delivery_id]) == [delivery_id]


@dataclass(frozen=True)
class _Claimed:
    outgoing: delivery.Outgoing
    created_at: datetime


def _prepare(*, delivery_ids: list[str], now: datetime) -> list[_Claimed]:
    """Load what the claimed rows need for sending; finish rows that may no longer be sent."""
    rows = (WebhookDelivery.objects.filter(pk__in=delivery_ids)
            .select_related("endpoint", "event").order_by("next_attempt_at", "pk"))
    secrets_by_endpoint: dict[str, tuple[str, ...]] = {}
    claimed: list[_Claimed] = []
    for row in rows:
        endpoint = row.endpoint
        if endpoint.status != EndpointStatus.ENABLED or endpoint.deleted_at is not None:
            WebhookDelivery.objects.filter(pk=row.pk, status=DeliveryStatus.PENDING).update(
                status=DeliveryStatus.FAILED, next_attempt_at=None, locked_until=None,
                completed_at=now, last_error="endpoint disabled before sending")
            continue
        if endpoint.pk not in secrets_by_endpoint:
            try:
                secrets_by_endpoint[endpoint.pk] = endpoint_signing_secrets(endpoint=endpoint,
                                                                            now=now)
            except crypto.InvalidToken:
                # Our key configuration is wrong, not the merchant's endpoint: no attempt is
                # logged against them; the row is retried when the lease ends.
                logger.error("cannot decrypt the signing secret of endpoint %s; check "
                             "FIELD_ENCRYPTION_KEYS", endpoint.pk)
                secrets_by_endpoint[endpoint.pk] = ()
        signing = secrets_by_endpoint[endpoint.pk]
        if not signing:
            continue
        if not versions.is_version(row.event.api_version):
            # Recorded by a release that knows a newer version (this one was rolled back, or
            # is an old worker mid-deploy): it cannot be rendered here. The row waits, leased,
            # for a release that can; the rest of the batch goes out.
            logger.error("cannot render event %s: API version %s is unknown to this release",
                         row.event_id, row.event.api_version)
            continue
        body = json.dumps(event_to_dict(row.event, version=endpoint.api_version),
                          separators=(",", ":")).encode()
        claimed.append(_Claimed(created_at=row.created_at, outgoing=delivery.Outgoing(
            delivery_id=row.pk, attempt_number=row.attempt_count, endpoint_id=endpoint.pk,
            url=endpoint.url, event_id=row.event_id, body=body, secrets=signing,
        )))
    return claimed


def retry_at(*, attempt_number: int, created_at: datetime, now: datetime) -> datetime | None:
    """When to try again after failed attempt `attempt_number`, or None to give up.

    Exponential (1 min, 2, 4, … capped at 6 h) with "equal jitter" (half fixed, half random)
    so endpoints that failed together do not all retry in the same second. The last try is at
    the end of the window exactly, so a delivery is retried for the full 3 days."""
    deadline = created_at + RETRY_WINDOW
    if now >= deadline:
        return None
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt_number - 1, 30))
    delay = delay / 2 + random.uniform(0, delay / 2)
    return min(now + timedelta(seconds=delay), deadline)


def circuit_cooldown(*, consecutive_failures: int) -> timedelta:
    """How long an endpoint's circuit stays open after its `consecutive_failures`-th failure in
    a row: CIRCUIT_COOLDOWN_SECONDS at the threshold, doubling with each failed probe."""
    doublings = min(consecutive_failures - CIRCUIT_THRESHOLD, 20)
    return timedelta(seconds=min(CIRCUIT_COOLDOWN_MAX_SECONDS,
                                 CIRCUIT_COOLDOWN_SECONDS * 2 ** doublings))


def _update_failure_streaks(outcomes: list[tuple[_Claimed, delivery.AttemptResult]],
                            now: datetime) -> set[str]:
    """Move each endpoint's failure streak (`failing_since`, `consecutive_failures`) and its
    circuit by this batch's results, in time order; returns the endpoints whose latest result
    is a failure. Rows are locked in id order, before any delivery row, which is the order
    claiming and disabling use, so none of them deadlock."""
    by_endpoint: dict[str, list[delivery.AttemptResult]] = {}
    for claimed, result in outcomes:
        by_endpoint.setdefault(claimed.outgoing.endpoint_id, []).append(result)
    failing: set[str] = set()
    endpoints = (WebhookEndpoint.objects.select_for_update(no_key=True)
                 .filter(pk__in=by_endpoint).order_by("pk"))
    for endpoint in endpoints:
        results = sorted(by_endpoint[endpoint.pk], key=lambda result: result.started_at)
        successes = [i for i, result in enumerate(results) if result.is_success]
        if successes and successes[-1] == len(results) - 1:
            endpoint.failing_since = None
            endpoint.consecutive_failures = 0
            endpoint.circuit_open_until = None
        else:
            failing.add(endpoint.pk)
            trailing = results[successes[-1] + 1 if successes else 0:]
            if successes:  # a success in this batch ended the old streak; a new one began
                endpoint.failing_since = trailing[0].started_at
                endpoint.consecutive_failures = len(trailing)
            else:
                endpoint.failing_since = endpoint.failing_since or trailing[0].started_at
                endpoint.consecutive_failures += len(trailing)
            if endpoint.consecutive_failures >= CIRCUIT_THRESHOLD:
                endpoint.circuit_open_until = now + circuit_cooldown(
                    consecutive_failures=endpoint.consecutive_failures)
        endpoint.save(update_fields=["failing_since", "consecutive_failures",
                                     "circuit_open_until"])
    return failing


def _record(outcomes: list[tuple[_Claimed, delivery.AttemptResult]]) -> None:
    """Log the attempts and move each delivery on: delivered, retry later, or failed. One
    transaction and a handful of statements per batch, however large."""
    if not outcomes:
        return
    now = timezone.now()
    with transaction.atomic():
        failing = _update_failure_streaks(outcomes, now)
        for _, result in outcomes:
            metrics.WEBHOOK_DELIVERIES.labels("success" if result.is_success else "failure").inc()
        WebhookDeliveryAttempt.objects.bulk_create([
            WebhookDeliveryAttempt(
                delivery_id=claimed.outgoing.delivery_id, number=claimed.outgoing.attempt_number,
                started_at=result.started_at, latency_ms=result.latency_ms,
                status_code=result.status_code, response_snippet=result.response_snippet,
                error=result.error, is_success=result.is_success,
            )
            for claimed, result in outcomes
        ])
        delivered: dict[int, list[str]] = {}
        for claimed, result in outcomes:
            if result.is_success:
                delivered.setdefault(result.status_code or 200, []).append(
                    claimed.outgoing.delivery_id)
                continue
            # A failure moves the row only if no later claim took it over (lease ran out).
            mine = WebhookDelivery.objects.filter(
                pk=claimed.outgoing.delivery_id, status=DeliveryStatus.PENDING,
                attempt_count=claimed.outgoing.attempt_number)
            last = {"last_status_code": result.status_code,
                    "last_error": result.error or f"HTTP {result.status_code}"}
            next_at = retry_at(attempt_number=claimed.outgoing.attempt_number,
                               created_at=claimed.created_at, now=now)
            if next_at is not None:
                mine.update(next_attempt_at=next_at, locked_until=None, **last)
            else:
                mine.update(status=DeliveryStatus.FAILED, next_attempt_at=None,
                            locked_until=None, completed_at=now, **last)
        for status_code, ids in delivered.items():
            # Success counts even if our lease had run out: the merchant has the event.
            WebhookDelivery.objects.filter(pk__in=ids, status=DeliveryStatus.PENDING).update(
                status=DeliveryStatus.DELIVERED, next_attempt_at=None, locked_until=None,
                completed_at=now, last_status_code=status_code, last_error="")
        to_disable = list(WebhookEndpoint.objects.filter(
            pk__in=failing, status=EndpointStatus.ENABLED,
            failing_since__lte=now - DISABLE_AFTER).values_list("pk", flat=True))
    for endpoint_id in sorted(to_disable):
        endpoint_disable_failing(endpoint_id=endpoint_id)


def delivery_execute(*, delivery_id: str) -> bool:
    """Send one delivery if it is due and nobody holds it (the Celery task's body). False if
    there was nothing to do: already delivered or failed, not due yet, or claimed elsewhere."""
    now = timezone.now()
    if not _claim(delivery_id=delivery_id, now=now):
        return False
    _record([(claimed, delivery.send(claimed.outgoing))
             for claimed in _prepare(delivery_ids=[delivery_id], now=now)])
    return True


def _send_all(batch: list[_Claimed], pool: ThreadPoolExecutor | None
              ) -> list[tuple[_Claimed, delivery.AttemptResult]]:
    outgoing = [claimed.outgoing for claimed in batch]
    results = pool.map(delivery.send, outgoing) if pool else map(delivery.send, outgoing)
    return list(zip(batch, results, strict=True))


def delivery_sweep(*, batch_size: int = SWEEP_BATCH_SIZE, concurrency: int = SWEEP_CONCURRENCY,
                   time_budget: float | None = None) -> int:
    """Send every due delivery: first tries whose task was lost, and retries. Safe to run in
    several processes at once (SKIP LOCKED + lease). Threads do only the HTTP; this thread
    claims and records. Returns the number of attempts made."""
    started = time.monotonic()
    attempts = 0
    pool = ThreadPoolExecutor(max_workers=concurrency) if concurrency > 1 else None
    try:
        while True:
            now = timezone.now()
            ids = _claim_due(limit=batch_size, now=now)
            if not ids:
                break
            outcomes = _send_all(_prepare(delivery_ids=ids, now=now), pool)
            _record(outcomes)
            attempts += len(outcomes)
            if time_budget is not None and time.monotonic() - started > time_budget:
                break
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return attempts
