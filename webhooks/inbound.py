"""Inbound provider webhooks: verify the raw body, store it in the inbox, answer fast, process
asynchronously in any arrival order.

- A bad signature or a timestamp more than 300 s away answers 400 and stores nothing (a counter
  and a log line only).
- The inbox row is unique on (provider, provider event id): a duplicate answers 200 and changes
  nothing.
- Processing locks the inbox row (SKIP LOCKED, so two workers never apply one event twice) and
  applies it through the normal services; an event that must wait for an earlier one (a refund
  before its capture) is `held` and re-run whenever its object moves, by any path (webhook,
  reply, lookup, janitor), and by the sweeper every HELD_RECHECK_AFTER.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core import metrics
from providers.registry import UnknownProvider, get_provider
from webhooks.models import InboxStatus, ProviderEvent

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
HELD_RECHECK_AFTER = timedelta(seconds=60)
SIGNATURE_FAILURES: Counter[str] = Counter()  # exported as a metric: rejected webhooks/provider
_SIGNATURE_HEADERS = ("signature", "authorization")


class InboundRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Received:
    event_id: int
    duplicate: bool


def provider_event_receive(*, provider: str, headers: dict[str, str], body: bytes) -> Received:
    """Verify and store one provider webhook; schedule its processing after commit."""
    try:
        adapter = get_provider(provider)
    except UnknownProvider:
        raise InboundRejected(404, f"Unknown provider {provider!r}.") from None
    verify = getattr(adapter, "verify_webhook", None)
    if verify is None or not verify(headers=headers, body=body):
        SIGNATURE_FAILURES[provider] += 1
        metrics.INBOUND_REJECTED.labels(provider).inc()
        logger.warning("rejected %s webhook: bad signature or stale timestamp", provider)
        raise InboundRejected(400, "Invalid signature or timestamp.")
    try:
        event = adapter.parse_webhook(body)
    except ValueError as exc:
        logger.warning("rejected %s webhook: unreadable payload: %s", provider, exc)
        raise InboundRejected(400, "Unreadable payload.") from None
    kept_headers = {k: v for k, v in headers.items()
                    if not any(word in k.lower() for word in _SIGNATURE_HEADERS)}
    try:
        with transaction.atomic():
            row = ProviderEvent.objects.create(
                provider=provider, provider_event_id=event.event_id, type=event.type,
                provider_reference=event.provider_reference,
                merchant_reference=event.merchant_reference,
                raw_body=body.decode("utf-8", errors="replace"), headers=kept_headers,
                occurred_at=event.occurred_at, next_attempt_at=timezone.now())
            transaction.on_commit(lambda: _enqueue(row.pk))
    except IntegrityError:
        existing = ProviderEvent.objects.only("pk").get(provider=provider,
                                                        provider_event_id=event.event_id)
        return Received(existing.pk, duplicate=True)
    return Received(row.pk, duplicate=False)


def _enqueue(row_id: int) -> None:
    from webhooks.tasks import provider_event_process

    try:
        provider_event_process.delay(row_id)
    except Exception:
        logger.exception("could not enqueue provider event %s; the sweeper will process it",
                         row_id)


def _apply(row: ProviderEvent) -> str:
    """Dispatch a stored event to the service that owns its object."""
    from payments.services import payment_provider_event_apply

    adapter = get_provider(row.provider)
    event = adapter.parse_webhook(row.raw_body.encode())
    if event.type.startswith(("payout.", "deposit.")):
        from wallet.services import movement_provider_event_apply

        return movement_provider_event_apply(event=event)
    reason = str((event.payload.get("dispute") or {}).get("reason", "")) if isinstance(
        event.payload.get("dispute"), dict) else ""
    return payment_provider_event_apply(
        provider=event.provider, type=event.type, provider_reference=event.provider_reference,
        merchant_reference=event.merchant_reference, amount=event.amount,
        currency=event.currency, status=event.status,
        error_code=event.error_code, refund_reference=event.refund_reference,
        dispute_reference=event.dispute_reference, reason=reason)


def provider_event_process(*, event_id: int) -> str | None:
    """Apply one inbox row exactly once. Returns its new status, or None when another worker
    holds it or it was already done."""
    with transaction.atomic():
        row = (ProviderEvent.objects.select_for_update(skip_locked=True)
               .filter(pk=event_id).exclude(status__in=[InboxStatus.PROCESSED,
                                                        InboxStatus.IGNORED]).first())
        if row is None:
            return None
        row.attempts += 1
        try:
            with transaction.atomic():  # a failure rolls back the service's work, not the row
                outcome = _apply(row)
        except Exception as exc:
            logger.exception("provider event %s (%s) failed to apply", row.pk, row.type)
            row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            row.status = (InboxStatus.FAILED if row.attempts >= MAX_ATTEMPTS
                          else InboxStatus.PENDING)
            row.next_attempt_at = timezone.now() + timedelta(seconds=min(3600, 2 ** row.attempts))
            row.save()
            return row.status
        row.status = {"applied": InboxStatus.PROCESSED, "held": InboxStatus.HELD,
                      "ignored": InboxStatus.IGNORED}[outcome]
        row.processed_at = timezone.now() if row.status != InboxStatus.HELD else None
        row.last_error = ""
        # A held event is re-run as soon as its object moves (provider_events_release), and by
        # the sweeper on this backoff in case nothing ever tells us.
        row.next_attempt_at = None
        if row.status == InboxStatus.HELD:
            row.attempts = 0  # waiting is not failing: MAX_ATTEMPTS counts errors only
            row.next_attempt_at = timezone.now() + HELD_RECHECK_AFTER
        row.save()
    if row.status == InboxStatus.PROCESSED:
        provider_events_release(provider=row.provider, provider_reference=row.provider_reference,
                                merchant_reference=row.merchant_reference, exclude=row.pk)
    return row.status


def provider_events_release(*, provider: str, provider_reference: str = "",
                            merchant_reference: str = "", exclude: int | None = None) -> int:
    """Something about an object changed (a webhook, a synchronous reply, a lookup, the janitor,
    a settlement line): re-run the events held for it, oldest first. Returns how many ran."""
    same_object = Q(pk__in=[])
    if provider_reference:
        same_object |= Q(provider=provider, provider_reference=provider_reference)
    if merchant_reference:
        same_object |= Q(merchant_reference=merchant_reference)
    held = (ProviderEvent.objects.filter(same_object, status=InboxStatus.HELD)
            .exclude(pk=exclude).order_by("occurred_at", "pk").values_list("pk", flat=True))
    return sum(1 for held_id in list(held) if provider_event_process(event_id=held_id))


def provider_event_replay(*, event_id: int) -> str | None:
    """Operator action: run a failed or held event again."""
    ProviderEvent.objects.filter(pk=event_id, status__in=[InboxStatus.FAILED, InboxStatus.HELD]
                                 ).update(status=InboxStatus.PENDING, attempts=0)
    return provider_event_process(event_id=event_id)


def provider_events_sweep(*, limit: int = 500) -> int:
    """Beat: process pending rows whose task was lost or whose retry is due, and re-check held
    rows whose object may have moved without telling us."""
    due = (ProviderEvent.objects.filter(status__in=[InboxStatus.PENDING, InboxStatus.HELD],
                                        next_attempt_at__lte=timezone.now())
           .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    return sum(1 for pk in list(due) if provider_event_process(event_id=pk) is not None)


def headers_of(meta: dict[str, object]) -> dict[str, str]:
    """HTTP headers from a WSGI environ, with their usual names."""
    headers = {key[5:].replace("_", "-").title(): str(value)
               for key, value in meta.items() if key.startswith("HTTP_")}
    if "CONTENT_TYPE" in meta:
        headers["Content-Type"] = str(meta["CONTENT_TYPE"])
    return headers
