"""Read-only admin for deposits, payouts and their provider attempts: nobody edits a status or an
amount here; every change goes through `wallet.services`."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from backoffice.admin_base import ReadOnlyAdmin
from backoffice.exports import ExportMixin, columns, money
from wallet.models import Deposit, MovementAttempt, Payout

ATTEMPT_FIELDS = ("id", "provider", "amount", "status", "provider_reference", "error_code",
                  "latency_ms", "created_at", "completed_at")


class _AttemptInline(admin.TabularInline):
    model = MovementAttempt
    extra = 0
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS
    can_delete = False
    ordering = ("created_at",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PayoutAttemptInline(_AttemptInline):
    fk_name = "payout"


class DepositAttemptInline(_AttemptInline):
    fk_name = "deposit"


class _MovementAdmin(ExportMixin, ReadOnlyAdmin):
    """Payouts and deposits list, filter, search and export alike; each shows its own
    attempts."""

    export_columns = columns("id", "merchant_id", "merchant__name", "created_at", "status",
                             "currency", money(), "provider", "provider_reference",
                             "completed_at", "failure_code", "description")
    list_display = ("id", "merchant", "amount", "currency", "status", "provider", "created_at")
    list_filter = ("status", "provider", "currency", "created_at")
    search_fields = ("=id", "=provider_reference", "=merchant__id", "merchant__name")
    list_select_related = ("merchant",)
    show_full_result_count = False
    date_hierarchy = "created_at"


@admin.register(Payout)
class PayoutAdmin(_MovementAdmin):
    inlines = [PayoutAttemptInline]


@admin.register(Deposit)
class DepositAdmin(_MovementAdmin):
    inlines = [DepositAttemptInline]


@admin.register(MovementAttempt)
class MovementAttemptAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "payout", "deposit", "provider", "amount", "status",
                    "error_code", "created_at")
    list_filter = ("kind", "status", "provider")
    search_fields = ("=id", "=payout__id", "=deposit__id", "=provider_reference")
