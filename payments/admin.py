"""Read-only admin for payments, refunds and attempts (the operations console comes later).

Nobody edits a status or an amount here: every field is read-only and there is no add/delete."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html_join

from payments.models import Payment, PaymentAttempt, Refund


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AttemptInline(admin.TabularInline):
    model = PaymentAttempt
    fk_name = "payment"
    extra = 0
    fields = ("id", "kind", "provider", "amount", "status", "error_code", "latency_ms",
              "created_at", "completed_at")
    readonly_fields = fields
    can_delete = False
    ordering = ("created_at",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    fields = ("id", "amount", "status", "reason", "created_at")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "merchant", "amount", "currency", "status", "provider", "created_at")
    list_filter = ("status", "provider", "currency", "capture_method", "created_at")
    search_fields = ("=id", "=provider_reference", "merchant__name", "=merchant__id",
                     "description")
    list_select_related = ("merchant",)
    show_full_result_count = False  # COUNT(*) over millions of rows is not worth it
    date_hierarchy = "created_at"
    inlines = [AttemptInline, RefundInline]
    readonly_fields = ("journal_entries",)

    @admin.display(description="Ledger entries")
    def journal_entries(self, payment: Payment) -> str:
        """The payment's own entries and its refunds' and disputes', each linking to the entry
        (whose page links back here)."""
        from ledger.admin import entry_links

        links = [entry_links(reference_type="payment", reference_ids=[payment.pk])]
        refunds = [str(pk) for pk in payment.refunds.values_list("pk", flat=True)]
        disputes = [str(pk) for pk in payment.disputes.values_list("pk", flat=True)]
        if refunds:
            links.append(entry_links(reference_type="refund", reference_ids=refunds))
        if disputes:
            links.append(entry_links(reference_type="dispute", reference_ids=disputes))
        return format_html_join(" · ", "{}", ((link,) for link in links if link != "—")) or "—"


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("id", "payment", "merchant", "amount", "currency", "status", "created_at")
    list_filter = ("status", "currency", "reason")
    search_fields = ("=id", "=payment__id", "=provider_reference")
    list_select_related = ("merchant",)


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ReadOnlyAdmin):
    list_display = ("id", "payment", "kind", "provider", "amount", "status", "error_code",
                    "latency_ms", "created_at")
    list_filter = ("kind", "status", "provider")
    search_fields = ("=id", "=payment__id", "=provider_reference")
