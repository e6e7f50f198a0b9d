"""Reads for events, webhook endpoints and deliveries, scoped to one merchant."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Now

from core.metrics import oldest_age_seconds
from core.models import Merchant
from core.selectors import narrowed, one_or_404
from webhooks.models import (
    WILDCARD,
    DeliveryStatus,
    EndpointStatus,
    Event,
    EventRelayCursor,
    InboxStatus,
    ProviderEvent,
    WebhookDelivery,
    WebhookEndpoint,
)


def event_get(*, merchant: Merchant, event_id: str) -> Event:
    return one_or_404(Event.objects.filter(merchant=merchant), event_id, noun="event")


def event_list(*, merchant: Merchant, type: str | None = None, object_id: str | None = None
               ) -> QuerySet[Event]:
    return narrowed(Event.objects.filter(merchant=merchant), type=type, object_id=object_id)


def endpoint_list(*, merchant: Merchant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(merchant=merchant, deleted_at__isnull=True)


def endpoint_get(*, merchant: Merchant, endpoint_id: str, param: str = "id") -> WebhookEndpoint:
    return one_or_404(endpoint_list(merchant=merchant), endpoint_id, noun="webhook endpoint",
                      param=param)


def endpoint_ids_subscribed(*, merchant: Merchant, type: str) -> list[str]:
    """Ids of the merchant's enabled endpoints that want `type` (one indexed query)."""
    return list(
        endpoint_list(merchant=merchant)
        .filter(status=EndpointStatus.ENABLED)
        .filter(Q(enabled_events__contains=[type]) | Q(enabled_events__contains=[WILDCARD]))
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )


def delivery_list(*, merchant: Merchant, endpoint_id: str) -> QuerySet[WebhookDelivery]:
    endpoint = endpoint_get(merchant=merchant, endpoint_id=endpoint_id)
    return (WebhookDelivery.objects.filter(endpoint=endpoint)
            .select_related("event").prefetch_related("attempts"))


# -- for /metrics ----------------------------------------------------------------------------
def pending_deliveries() -> tuple[int, float]:
    """(count, age in seconds of the oldest) of outbound deliveries not yet delivered."""
    rows = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
    return rows.count(), oldest_age_seconds(rows, "created_at")


def oldest_due_delivery_seconds() -> float:
    """How long the most overdue pending delivery has been due."""
    return oldest_age_seconds(WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=Now()), "next_attempt_at")


def inbox_counts() -> list[tuple[str, int]]:
    """(status, count) of inbound provider events not yet processed."""
    return list(ProviderEvent.objects.exclude(status=InboxStatus.PROCESSED).order_by()
                .values("status").annotate(count=Count("id")).values_list("status", "count"))


def oldest_pending_inbound_seconds() -> float:
    """Age of the oldest inbound provider event still waiting to be applied."""
    return oldest_age_seconds(ProviderEvent.objects.filter(status=InboxStatus.PENDING),
                              "received_at")


def event_relay_lags() -> list[tuple[str, int, float]]:
    """(relay, events not yet published, age in seconds of the oldest of them) per relay:
    what each broker's consumers do not have yet. Index-backed: the newest position, the
    events still to sequence (partial index) and the first event after each cursor."""
    unsequenced = Event.objects.filter(seq__isnull=True)
    waiting, oldest_waiting = unsequenced.count(), oldest_age_seconds(unsequenced, "created_at")
    newest = (Event.objects.filter(seq__isnull=False).order_by("-seq")
              .values_list("seq", flat=True).first()) or 0
    return [
        (cursor.name, max(newest - cursor.position, 0) + waiting,
         max(oldest_waiting, oldest_age_seconds(
             Event.objects.filter(seq=cursor.position + 1), "created_at")))
        for cursor in EventRelayCursor.objects.order_by("name")
    ]
