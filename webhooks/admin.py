"""Read-only admin for events, webhook endpoints and deliveries, plus a "resend" action.

Nothing here saves a status or shows a secret: changes go through the same services as the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.errors import ClearhouseError
from webhooks import services
from webhooks.models import Event, WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "object_id", "merchant", "created_at"]
    list_filter = ["type"]
    search_fields = ["id", "object_id", "merchant__id"]
    readonly_fields = ["id", "merchant", "type", "object_type", "object_id", "data", "created_at"]
    list_select_related = ["merchant"]
    date_hierarchy = "created_at"


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ["id", "url", "merchant", "status", "failing_since", "created_at"]
    list_filter = ["status"]
    search_fields = ["id", "url", "merchant__id"]
    list_select_related = ["merchant"]
    # The encrypted secret columns are left out on purpose: not even ciphertext is shown.
    fields = readonly_fields = [
        "id", "merchant", "url", "enabled_events", "description", "status", "disabled_reason",
        "failing_since", "previous_secret_expires_at", "created_at", "updated_at", "deleted_at",
    ]


class AttemptInline(admin.TabularInline):
    model = WebhookDeliveryAttempt
    fields = readonly_fields = ["number", "started_at", "latency_ms", "status_code",
                                "is_success", "error", "response_snippet"]
    ordering = ["number"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "event_type", "endpoint", "status", "attempt_count",
                    "last_status_code", "next_attempt_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["id", "event__id", "endpoint__id", "endpoint__url"]
    list_select_related = ["event", "endpoint"]
    readonly_fields = ["id", "endpoint", "event", "status", "attempt_count", "next_attempt_at",
                       "locked_until", "last_status_code", "last_error", "created_at",
                       "completed_at"]
    inlines = [AttemptInline]
    actions = ["resend"]

    @admin.display(description="event")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    @admin.action(description="Resend the event to the same endpoint (a new delivery)")
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        created, refused = 0, []
        for row in queryset.select_related("endpoint__merchant"):
            try:
                created += len(services.event_resend(merchant=row.endpoint.merchant,
                                                     event_id=row.event_id,
                                                     endpoint_id=row.endpoint_id))
            except ClearhouseError as exc:
                refused.append(f"{row.id}: {exc.message}")
        if created:
            self.message_user(request, f"{created} new deliveries queued.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)
