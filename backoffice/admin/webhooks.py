"""Read-only admin for events, webhook endpoints, deliveries (with resend) and the inbound
provider inbox (with replay).

Nothing here saves a status or shows a secret: resend and replay call the same services as the
API and the workers, through `backoffice.services`, which checks the permission and writes the
staff audit row.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from backoffice import services
from backoffice.action_views import ObjectActionsMixin, Outcome
from backoffice.admin_base import LargeTableMixin, ReadOnlyAdmin, StatusBadgeMixin
from backoffice.admin_filters import ProviderFilter
from backoffice.admin_ids import TolerantIdsMixin
from backoffice.audit import Actor
from backoffice.forms import OptionalNoteForm
from core.carddata import redact_card_numbers
from core.errors import ClearhouseError
from webhooks.models import (
    DeliveryStatus,
    Event,
    InboxStatus,
    ProviderEvent,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
)

BULK_LIMIT = 100  # rows one bulk resend or replay handles: each may call out or queue work


def _say_if_capped(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet,
                   what: str) -> None:
    selected = queryset.count()
    if selected > BULK_LIMIT:
        model_admin.message_user(request, f"Only the first {BULK_LIMIT} of {selected} selected "
                                          f"{what} are handled in one go; run the action again "
                                          "for the rest.", messages.WARNING)


@admin.register(Event)
class EventAdmin(LargeTableMixin, TolerantIdsMixin, ReadOnlyAdmin):
    list_display = ["id", "type", "object_id", "merchant", "created_at"]
    search_fields = ["=id", "=object_id", "=merchant__id"]
    search_help_text = "Event id (evt_…), the object's id (pay_…, re_…) or a merchant id."
    readonly_fields = ["id", "merchant", "type", "object_type", "object_id", "data", "created_at"]
    list_select_related = ["merchant"]
    ordering = ["-created_at"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TolerantIdsMixin, ReadOnlyAdmin):
    list_display = ["id", "url", "merchant", "status", "failing_since", "created_at"]
    list_filter = ["status"]
    search_fields = ["=id", "url", "=merchant__id"]
    list_select_related = ["merchant"]
    # The encrypted secret columns are left out on purpose: not even ciphertext is shown.
    fields = readonly_fields = [
        "id", "merchant", "url", "enabled_events", "description", "status", "disabled_reason",
        "failing_since", "consecutive_failures", "circuit_open_until",
        "previous_secret_expires_at", "created_at", "updated_at", "deleted_at",
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
class WebhookDeliveryAdmin(LargeTableMixin, StatusBadgeMixin, ObjectActionsMixin, TolerantIdsMixin,
                           ReadOnlyAdmin):
    list_display = ["id", "event_type", "endpoint", "status_label", "attempt_count",
                    "last_status_code", "next_attempt_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["=id", "=event__id", "=endpoint__id"]
    search_help_text = "Delivery id (wd_…), event id (evt_…) or endpoint id (we_…)."
    list_select_related = ["event", "endpoint"]
    readonly_fields = ["id", "endpoint", "event", "status", "attempt_count", "next_attempt_at",
                       "locked_until", "last_status_code", "last_error", "created_at",
                       "completed_at"]
    inlines = [AttemptInline]
    actions = ["resend"]
    ordering = ["-created_at"]
    action_names = ("resend",)

    @admin.display(description="event")
    def event_type(self, obj: WebhookDelivery) -> str:
        return obj.event.type

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("backoffice.resend_webhook")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"can_resend": self.has_resend_permission(request),
                   "failed": DeliveryStatus.FAILED}
        return super().change_view(request, object_id, form_url,
                                   {**context, **(extra_context or {})})

    @admin.action(description="Resend the event to the same endpoint (a new delivery)",
                  permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        actor = Actor.from_request(request)
        created, refused = 0, []
        _say_if_capped(self, request, queryset, "deliveries")
        for row in queryset[:BULK_LIMIT]:
            try:
                created += len(services.delivery_resend(actor=actor, delivery_id=row.pk))
            except ClearhouseError as exc:
                refused.append(f"{row.id}: {exc.message}")
        if created:
            self.message_user(request, f"{created} new deliveries queued.", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    def resend_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Actor, row: WebhookDelivery, data: dict[str, Any]) -> Outcome:
            made = services.delivery_resend(actor=actor, delivery_id=row.pk)
            return f"Queued {len(made)} new delivery of {row.event_id} to {row.endpoint_id}."

        return self._post(request, object_id, "resend_webhook", OptionalNoteForm, run)


@admin.register(ProviderEvent)
class ProviderEventAdmin(LargeTableMixin, StatusBadgeMixin, ObjectActionsMixin, ReadOnlyAdmin):
    """The inbound provider inbox: what arrived, how processing went, and replay for the rows
    that failed or still wait."""

    list_display = ["id", "provider", "type", "provider_event_id", "status_label", "attempts",
                    "received_at", "processed_at"]
    list_filter = ["status", ProviderFilter]
    search_fields = ["=provider_event_id", "=provider_reference", "=merchant_reference"]
    search_help_text = "The provider's event id, the charge's provider reference, or our " \
                       "payment id (pay_…)."
    readonly_fields = ["id", "provider", "provider_event_id", "type", "provider_reference",
                       "merchant_reference", "status", "attempts", "last_error", "occurred_at",
                       "received_at", "processed_at", "next_attempt_at", "headers", "body"]
    fields = readonly_fields
    actions = ["replay"]
    ordering = ["-received_at"]
    action_names = ("replay",)

    @admin.display(description="raw body")
    def body(self, obj: ProviderEvent) -> str:
        # Providers never send card numbers here; masked anyway before it reaches a screen.
        return format_html("<pre class='bo-pre'>{}</pre>", redact_card_numbers(obj.raw_body))

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("backoffice.replay_provider_event")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"can_replay": self.has_replay_permission(request),
                   "replayable": [InboxStatus.FAILED, InboxStatus.HELD]}
        return super().change_view(request, object_id, form_url,
                                   {**context, **(extra_context or {})})

    @admin.action(description="Replay the selected failed or held events", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[ProviderEvent]) -> None:
        actor = Actor.from_request(request)
        _say_if_capped(self, request, queryset, "events")
        for row in queryset[:BULK_LIMIT]:
            try:
                outcome = services.provider_event_replay_by_staff(actor=actor, event_id=row.pk)
                self.message_user(request, f"Event {row.pk}: {outcome or 'already processed'}.",
                                  messages.SUCCESS)
            except ClearhouseError as exc:
                self.message_user(request, f"Event {row.pk}: {exc.message}", messages.WARNING)

    def replay_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Actor, row: ProviderEvent, data: dict[str, Any]) -> Outcome:
            outcome = services.provider_event_replay_by_staff(actor=actor, event_id=row.pk)
            if outcome in (InboxStatus.PROCESSED, InboxStatus.IGNORED):
                return f"Replayed: the event is now {outcome}."
            return (messages.WARNING, f"Replayed, but the event is {outcome or 'busy'}: see "
                                      "its last error below.")

        return self._post(request, object_id, "replay_provider_event", OptionalNoteForm, run)
