"""Reads for events, webhook endpoints and deliveries, scoped to one merchant."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from core.errors import NotFound
from core.models import Merchant
from webhooks.models import WILDCARD, EndpointStatus, Event, WebhookDelivery, WebhookEndpoint


def event_get(*, merchant: Merchant, event_id: str) -> Event:
    event = Event.objects.filter(merchant=merchant, pk=event_id).first()
    if event is None:
        raise NotFound(f"No such event: '{event_id}'.", param="id")
    return event


def event_list(*, merchant: Merchant, type: str | None = None, object_id: str | None = None
               ) -> QuerySet[Event]:
    rows = Event.objects.filter(merchant=merchant)
    if type:
        rows = rows.filter(type=type)
    if object_id:
        rows = rows.filter(object_id=object_id)
    return rows


def endpoint_list(*, merchant: Merchant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(merchant=merchant, deleted_at__isnull=True)


def endpoint_get(*, merchant: Merchant, endpoint_id: str, param: str = "id") -> WebhookEndpoint:
    endpoint = endpoint_list(merchant=merchant).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound(f"No such webhook endpoint: '{endpoint_id}'.", param=param)
    return endpoint


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
