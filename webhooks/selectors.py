"""Reads for events, scoped to one merchant."""

from __future__ import annotations

from django.db.models import QuerySet

from core.errors import NotFound
from core.models import Merchant
from webhooks.models import Event


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
