"""Inbound provider webhooks: verify the raw body, store it in the inbox, answer fast, process
asynchronously in any arrival order.

- A bad signature or a timestamp more than 300 s away answers 400 and stores nothing (a counter
  and a log line only).
- The inbox row is unique on (provider, provider event id): a duplicate answers 200 and changes
  nothing.
- Processing locks the inbox row (SKIP LOCKED, so two workers never apply one event twice) and
  hands it to the applier of the app that owns its object (payments, wallet), which registers
  itself here from its AppConfig.ready, so this low layer never imports them; an event that must
  wait for an earlier one (a refund before its capture) is `held` and re-run whenever its object
  moves, by any path (webhook, reply, lookup, janitor), and by the sweeper every
  HELD_RECHECK_AFTER.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Protocol

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core import metrics
from core.transactions import task_send
from providers.base import (
    DisputeRetrieveRequest,
    DisputeState,
    InboundEvent,
    MovementStatus,
    Outcome,
    ProviderStatus,
    RetrieveRequest,
)
from providers.calls import provider_call
from providers.registry import UnknownProvider, get_provider
from webhooks.models import InboxStatus, ProviderEvent

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
HELD_RECHECK_AFTER = timedelta(seconds=60)
# Past the janitor's whole schedule (5 daily lookups) an event still waiting for its object is
# handed to people as a break instead of being held forever.
HELD_GIVE_UP_AFTER = timedelta(days=6)
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
    if not adapter.verify_webhook(headers=headers, body=body):
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
    task_send("webhooks.tasks.provider_event_process", row_id,
              what=f"provider event {row_id}", fallback="the sweeper will process it")


@dataclass(frozen=True)
class Confirmed:
    """What the provider's own lookup says about a notice that is only a hint: the event rebuilt
    from the lookup (None: nothing to apply) and the charge's running refund/dispute totals."""

    event: InboundEvent | None
    refunded: int | None = None
    disputed: int | None = None


class LookupUnanswered(Exception):
    """The provider's lookup gave no definite answer: the notice waits and is retried."""


_LOOKUP_PAYMENT_TYPES = {
    ProviderStatus.AUTHORIZED: "payment.authorized", ProviderStatus.CAPTURED: "payment.captured",
    ProviderStatus.REFUNDED: "payment.captured", ProviderStatus.DECLINED: "payment.declined",
    ProviderStatus.VOIDED: "payment.voided",
}
_LOOKUP_MOVEMENT_TYPES = {
    ("payout", MovementStatus.PAID): "payout.paid",
    ("payout", MovementStatus.FAILED): "payout.failed",
    ("deposit", MovementStatus.CONFIRMED): "deposit.confirmed",
    ("deposit", MovementStatus.FAILED): "deposit.failed",
}


def _confirm_by_lookup(provider: str, body: str) -> Confirmed:
    """Look the notice's object up at its provider (a network call: never inside a
    transaction) and rebuild the event from the answer. The notice's own amounts, statuses and
    currencies are never used; only its ids and, for refunds and disputes, its claim, which the
    charge's totals must cover."""
    adapter = get_provider(provider)
    event = adapter.parse_webhook(body.encode())
    if event.type.startswith(("payout.", "deposit.")):
        kind = event.type.partition(".")[0]
        if not event.provider_reference:
            return Confirmed(None)
        found = provider_call(provider, f"{kind}_retrieve", event.provider_reference)
        if found.outcome == Outcome.UNKNOWN:
            raise LookupUnanswered(f"{provider} {kind} lookup: {found.error_code}")
        type = _LOOKUP_MOVEMENT_TYPES.get((kind, found.status))
        if type is None:
            return Confirmed(None)
        return Confirmed(replace(event, type=type, status=found.status.value,
                                 provider_reference=found.provider_reference,
                                 merchant_reference=found.merchant_reference,
                                 amount=found.amount, currency=found.currency,
                                 error_code=found.error_code))
    if event.type in ("dispute.won", "dispute.lost"):
        return _confirm_dispute_decision(provider, event)
    found = provider_call(provider, "retrieve", RetrieveRequest(
        provider_reference=event.provider_reference, merchant_reference=event.merchant_reference))
    if found.outcome == Outcome.UNKNOWN:
        raise LookupUnanswered(f"{provider} lookup: {found.error_code}")
    if found.status not in _LOOKUP_PAYMENT_TYPES:
        return Confirmed(None)  # not found, or nothing definite: the notice proves nothing
    # Bound to the sale the provider looked up and to the order id *it* holds for that sale.
    if event.type in ("refund.succeeded", "dispute.opened"):
        return Confirmed(replace(event, provider_reference=found.provider_reference,
                                 merchant_reference=found.merchant_reference,
                                 currency=found.currency or event.currency),
                         refunded=found.amount_refunded or 0,
                         disputed=found.amount_disputed or 0)
    return Confirmed(replace(
        event, type=_LOOKUP_PAYMENT_TYPES[found.status], status=found.status.value,
        provider_reference=found.provider_reference,
        merchant_reference=found.merchant_reference, amount=found.amount,
        currency=found.currency, error_code=found.error_code))


def _confirm_dispute_decision(provider: str, event: InboundEvent) -> Confirmed:
    """A decision notice that is only a hint: the provider's own lookup of the case says
    whether it was decided, which way, for what amount and on which charge."""
    if not event.dispute_reference:
        return Confirmed(None)
    found = provider_call(provider, "dispute_retrieve", DisputeRetrieveRequest(
        dispute_reference=event.dispute_reference, provider_reference=event.provider_reference))
    if found.outcome == Outcome.UNKNOWN:
        raise LookupUnanswered(f"{provider} dispute lookup: {found.error_code}")
    if found.status not in (DisputeState.WON, DisputeState.LOST):
        return Confirmed(None)  # not decided (or not found): the notice proves nothing
    return Confirmed(replace(event, type=f"dispute.{found.status.value}",
                             provider_reference=found.provider_reference,
                             dispute_reference=found.dispute_reference or event.dispute_reference,
                             amount=found.amount, currency=found.currency))


class EventApplier(Protocol):
    """Applies one verified event to the state its app owns; returns `applied`, `held` or
    `ignored`. `confirmed` is the provider's lookup when its notices are only hints;
    `give_up_holding` says the event has waited past HELD_GIVE_UP_AFTER for its object."""

    def __call__(self, event: InboundEvent, *, confirmed: Confirmed | None,
                 give_up_holding: bool) -> str: ...


_appliers: dict[str, EventApplier] = {}  # by the event type's object: "payment", "payout", …


def register_event_applier(objects: Iterable[str], applier: EventApplier) -> None:
    """Called from the owning app's AppConfig.ready: events whose type starts with one of
    `objects` (`"refund"` for `refund.succeeded`) go to `applier`."""
    for name in objects:
        _appliers[name] = applier


def _apply(row: ProviderEvent, confirmed: Confirmed | None = None) -> str:
    """Dispatch a stored event to the app that owns its object: as verified, or as its
    provider's lookup confirmed it (`confirmed`) when its notices are only hints."""
    if confirmed is not None and confirmed.event is None:
        return "ignored"
    event = (confirmed.event if confirmed is not None
             else get_provider(row.provider).parse_webhook(row.raw_body.encode()))
    assert event is not None
    if not _appliers:  # fail loudly: events nobody applies would be dropped without a trace
        raise RuntimeError("No provider event applier is registered (are 'payments' and "
                           "'wallet' installed?).")
    applier = _appliers.get(event.type.partition(".")[0])
    if applier is None:
        return "ignored"  # about no object we keep
    return applier(event, confirmed=confirmed,
                   give_up_holding=row.received_at < timezone.now() - HELD_GIVE_UP_AFTER)


def _needs_lookup(provider: str) -> bool:
    try:
        return bool(get_provider(provider).notices_need_lookup)
    except UnknownProvider:
        return False


def provider_event_process(*, event_id: int) -> str | None:
    """Apply one inbox row exactly once. Returns its new status, or None when another worker
    holds it or it was already done. A hint (see `Confirmed`) is looked up first, outside any
    transaction; two workers may both look, only the one holding the row applies."""
    confirmed: Confirmed | None = None
    lookup_failure: Exception | None = None
    unlocked = (ProviderEvent.objects.filter(pk=event_id)
                .exclude(status__in=[InboxStatus.PROCESSED, InboxStatus.IGNORED])
                .values("provider", "raw_body").first())
    if unlocked is None:
        return None
    if _needs_lookup(unlocked["provider"]):
        try:
            confirmed = _confirm_by_lookup(unlocked["provider"], unlocked["raw_body"])
        except Exception as exc:
            lookup_failure = exc
    with transaction.atomic():
        row = (ProviderEvent.objects.select_for_update(skip_locked=True)
               .filter(pk=event_id).exclude(status__in=[InboxStatus.PROCESSED,
                                                        InboxStatus.IGNORED]).first())
        if row is None:
            return None
        row.attempts += 1
        try:
            if lookup_failure is not None:
                raise lookup_failure
            with transaction.atomic():  # a failure rolls back the service's work, not the row
                outcome = _apply(row, confirmed)
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
