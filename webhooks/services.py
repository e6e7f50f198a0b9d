"""Writes for events, webhook endpoints and the delivery outbox.

The outbox: `event_record` runs inside the caller's transaction and writes one WebhookDelivery
per subscribed endpoint next to the Event, so a delivery exists exactly when the change does.
After commit a Celery task is asked to send each one; if that enqueue is lost (broker down,
process killed between commit and enqueue) the sweeper finds the row by `next_attempt_at` and
sends it. Sending happens in three steps so no lock or transaction spans the network call:
claim (a lease in `locked_until`, taken with a conditional UPDATE or FOR UPDATE SKIP LOCKED),
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

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from core import crypto, metrics
from core.errors import InvalidRequest, NotFound, StateError
from core.idempotency import same_request_or_422
from core.models import Merchant
from webhooks import delivery, selectors, ssrf
from webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    Event,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
)
from webhooks.serializers import endpoint_to_dict, event_to_dict

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
    endpoint = (WebhookEndpoint.objects.select_for_update()
                .filter(merchant=merchant, pk=endpoint_id, deleted_at__isnull=True).first())
    if endpoint is None:
        raise NotFound(f"No such webhook endpoint: '{endpoint_id}'.", param="id")
    return endpoint


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
                    description: str = "", idempotency_key: str = "",
                    idempotency_fingerprint: str = "") -> IssuedEndpoint:
    _vet_url(url)  # DNS outside the transaction
    secret = _new_secret()
    try:
        with transaction.atomic():
            endpoint = WebhookEndpoint.objects.create(
                merchant=merchant, url=url, enabled_events=enabled_events,
                description=description, secret_encrypted=crypto.encrypt(secret),
                idempotency_key=idempotency_key, idempotency_fingerprint=idempotency_fingerprint,
            )
            # Counted after the insert, so that a retry of a create that already committed
            # finds its endpoint (below) rather than the limit.
            if selectors.endpoint_list(merchant=merchant).count() > MAX_ENDPOINTS_PER_MERCHANT:
                raise InvalidRequest(
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
    from webhooks.tasks import webhook_deliver

    for index, delivery_id in enumerate(delivery_ids):
        try:
            webhook_deliver.delay(delivery_id)
        except Exception:
            # Stop at the first failure: the broker is likely down and each try may block.
            logger.exception("could not enqueue webhook delivery %s (+%d more); the sweeper "
                             "will send them", delivery_id, len(delivery_ids) - index - 1)
            return


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
    change does."""
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
def _lease_free(now: datetime) -> Q:
    return Q(locked_until__isnull=True) | Q(locked_until__lt=now)


def _claim(*, delivery_id: str, now: datetime) -> bool:
    """Take the lease on one due delivery. The conditional UPDATE is atomic: of two workers
    racing for the row, PostgreSQL re-checks the WHERE for the second and it matches nothing."""
    claimed = (WebhookDelivery.objects
               .filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
               .filter(_lease_free(now))
               .update(locked_until=now + LEASE, attempt_count=F("attempt_count") + 1))
    return claimed == 1


def _claim_due(*, limit: int, now: datetime) -> list[str]:
    """Take the lease on up to `limit` due deliveries; rows another sweeper is claiming right
    now are skipped, not waited for."""
    with transaction.atomic():
        ids = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .filter(_lease_free(now))
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            WebhookDelivery.objects.filter(pk__in=ids).update(
                locked_until=now + LEASE, attempt_count=F("attempt_count") + 1)
    return ids


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
        body = json.dumps(event_to_dict(row.event), separators=(",", ":")).encode()
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


def _update_failure_streaks(outcomes: list[tuple[_Claimed, delivery.AttemptResult]]
                            ) -> set[str]:
    """Move each endpoint's `failing_since` by this batch's results, in time order; returns
    the endpoints whose latest result is a failure. Rows are touched in id order, before any
    delivery row, which is the order disabling uses, so the two never deadlock."""
    by_endpoint: dict[str, list[delivery.AttemptResult]] = {}
    for claimed, result in outcomes:
        by_endpoint.setdefault(claimed.outgoing.endpoint_id, []).append(result)
    failing: set[str] = set()
    for endpoint_id in sorted(by_endpoint):
        results = sorted(by_endpoint[endpoint_id], key=lambda result: result.started_at)
        successes = [i for i, result in enumerate(results) if result.is_success]
        endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id)
        if successes and successes[-1] == len(results) - 1:
            endpoint.filter(failing_since__isnull=False).update(failing_since=None)
            continue
        failing.add(endpoint_id)
        streak_start = results[successes[-1] + 1 if successes else 0].started_at
        if successes:  # a success in this batch ended the old streak; a new one began
            endpoint.update(failing_since=streak_start)
        else:
            endpoint.filter(failing_since__isnull=True).update(failing_since=streak_start)
    return failing


def _record(outcomes: list[tuple[_Claimed, delivery.AttemptResult]]) -> None:
    """Log the attempts and move each delivery on: delivered, retry later, or failed. One
    transaction and a handful of statements per batch, however large."""
    if not outcomes:
        return
    now = timezone.now()
    with transaction.atomic():
        failing = _update_failure_streaks(outcomes)
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
