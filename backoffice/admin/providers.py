"""Admin for routing rules (edited as data, with their ordered provider targets), decline rules
(changed only through an approval request) and a read-only view of the circuit breakers. Rule
edits steer live traffic, so each one is written to the staff audit log with the rule and its
targets before and after."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from backoffice import services
from backoffice.action_views import require_perm
from backoffice.admin.staff import approval_request_view
from backoffice.admin_audit import AuditedModelAdmin
from backoffice.admin_base import ReadOnlyAdmin
from backoffice.audit import snapshot
from backoffice.forms import DeclineRuleChangeForm
from providers.models import (
    DeclineMeaning,
    DeclineRule,
    ProviderBreaker,
    RoutingRule,
    RoutingTarget,
)


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


@admin.register(DeclineRule)
class DeclineRuleAdmin(ReadOnlyAdmin):
    """What each decline code means for failover and delayed retries. Read-only here: a change
    is requested (operator) and applied once a different person approves it (approver)."""

    list_display = ("code", "provider_label", "meaning", "updated_at")
    list_filter = ("meaning", "provider")
    search_fields = ("code",)
    ordering = ("code", "provider")
    change_list_template = "admin/providers/declinerule/change_list.html"

    @admin.display(description="provider", ordering="provider")
    def provider_label(self, rule: DeclineRule) -> str:
        return rule.provider or "every provider"

    def get_urls(self) -> list[URLPattern]:
        form = self.admin_site.admin_view(self.change_request_view)
        return [path("request-change/", form, name="providers_declinerule_request_change"),
                *super().get_urls()]

    def change_request_view(self, request: HttpRequest) -> HttpResponse:
        actor = require_perm(request, "request_decline_rule_change")
        form = DeclineRuleChangeForm(request.POST or None, meanings=DeclineMeaning.choices,
                                     initial={"code": request.GET.get("code", ""),
                                              "provider": request.GET.get("provider", "")})
        return approval_request_view(
            self, request, form, lambda data: services.decline_rule_change_request(
                actor=actor, provider=data["provider"].strip(), code=data["code"].strip(),
                meaning=data["meaning"], note=data["note"]),
            title="Request a change to a decline rule",
            template="admin/providers/declinerule/request_change.html")
