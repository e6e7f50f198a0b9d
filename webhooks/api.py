"""Thin DRF views for events."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core.api import ERRORS, LIST_PARAMETERS, ApiView
from core.pagination import paginate
from webhooks import selectors
from webhooks.models import Event


def event_to_dict(event: Event) -> dict:
    return {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "created": int(event.created_at.timestamp()),
        "data": {"object": event.data},
    }


EventOutput = inline_serializer("Event", fields={
    "id": serializers.CharField(), "object": serializers.CharField(),
    "type": serializers.CharField(), "created": serializers.IntegerField(),
    "data": serializers.DictField(),
})


class EventCollection(ApiView):
    @extend_schema(operation_id="events_list",
                   parameters=[*LIST_PARAMETERS, OpenApiParameter("type", str),
                               OpenApiParameter("object_id", str)],
                   responses={200: inline_serializer("EventList", fields={
                       "object": serializers.CharField(), "data": EventOutput,
                       "has_more": serializers.BooleanField()}), **ERRORS})
    def get(self, request: Request) -> Response:
        rows = selectors.event_list(merchant=request.user,
                                    type=request.query_params.get("type"),
                                    object_id=request.query_params.get("object_id"))
        return Response(paginate(rows, request, event_to_dict))


class EventDetail(ApiView):
    @extend_schema(operation_id="events_retrieve", responses={200: EventOutput, **ERRORS})
    def get(self, request: Request, event_id: str) -> Response:
        return Response(event_to_dict(selectors.event_get(merchant=request.user,
                                                          event_id=event_id)))
