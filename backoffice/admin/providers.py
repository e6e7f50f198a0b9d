"""Admin for routing rules (edited as data, with their ordered provider targets) and a
read-only view of the circuit breakers. Rule edits steer live traffic, so each one is written to
the staff audit log with the rule and its targets before and after."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from backoffice.admin_audit import AuditedModelAdmin
from backoffice.audit import snapshot
from providers.models import ProviderBreaker, RoutingRule, RoutingTarget


class RoutingTargetInline(admin.TabularInline):
    model = RoutingTarget
    extra = 1
    fields = ("provider", "position", "weight")
    ordering = ("position", "id")


@admin.register(RoutingRule)
class RoutingRuleAdmin(AuditedModelAdmin):
    list_display = ("name", "priority", "is_active", "merchant_id", "currency", "min_amount",
                    "max_amount", "payment_method_brand", "providers")
    list_filter = ("is_active", "currency", "payment_method_brand")
    search_fields = ("name", "merchant_id")
    ordering = ("priority", "id")
    inlines = [RoutingTargetInline]

    @admin.display(description="Providers (weight)")
    def providers(self, rule: RoutingRule) -> str:
        targets = sorted(rule.targets.all(), key=lambda t: (t.position, t.id))  # prefetched
        return ", ".join(f"{t.provider} ({t.weight})" for t in targets)

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoutingRule]:
        return super().get_queryset(request).prefetch_related("targets")

    def audit_snapshot(self, obj: RoutingRule) -> dict[str, Any]:
        targets = obj.targets.order_by("position", "id") if obj.pk else []
        return {**snapshot(obj), "targets": [snapshot(t, ("provider", "position", "weight"))
                                             for t in targets]}


@admin.register(ProviderBreaker)
class ProviderBreakerAdmin(admin.ModelAdmin):
    """Breakers change only through `providers.breaker`; the admin shows them."""

    list_display = ("provider", "state", "failure_count", "window_started_at", "opened_at",
                    "probe_started_at", "updated_at")
    ordering = ("provider",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
