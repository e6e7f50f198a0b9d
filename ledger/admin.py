"""Read-only admin for accounts, journal entries (with their postings) and postings.

Nothing here can add, change or delete a row: the ledger moves only through `entry_post`, and
mistakes are corrected with a reversing entry, never an edit.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from ledger.models import Account, JournalEntry, Posting
from ledger.selectors import entry_list_for

# reference_type → admin change view of the business object; unknown or unregistered types
# are shown as plain text.
_REFERENCE_ADMIN = {
    "payment": "admin:payments_payment_change",
    "refund": "admin:payments_refund_change",
    "dispute": "admin:payments_dispute_change",
    "payout": "admin:payments_payout_change",
    "deposit": "admin:payments_deposit_change",
    "journal_entry": "admin:ledger_journalentry_change",
}


class ReadOnlyAdminMixin:
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _reference_link(entry: JournalEntry) -> str:
    label = f"{entry.reference_type} {entry.reference_id}"
    try:
        url = reverse(_REFERENCE_ADMIN[entry.reference_type], args=[entry.reference_id])
    except (KeyError, NoReverseMatch):
        return label
    return format_html('<a href="{}">{}</a>', url, label)


def entry_links(*, reference_type: str, reference_ids: list[str]) -> str:
    """Links to the entries explaining some objects, for other apps' admin pages (a payment's
    page passes its own id; add its refunds' ids under "refund" for the full story)."""
    entries = entry_list_for(reference_type=reference_type, reference_ids=reference_ids)
    return format_html_join(
        ", ", '<a href="{}">{} {}</a>',
        ((reverse("admin:ledger_journalentry_change", args=[e.id]), e.kind, e.id)
         for e in entries),
    ) or "—"


class PostingInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Posting
    fields = ("id", "account", "amount", "currency", "balance_after")
    readonly_fields = fields
    ordering = ("account_id",)
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Account)
class AccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "merchant", "code", "currency", "balance", "version", "created_at")
    list_filter = ("kind", "currency")
    search_fields = ("merchant__id", "merchant__name", "provider")
    list_select_related = ("merchant",)
    readonly_fields = ("id", "merchant", "kind", "provider", "currency", "balance", "version",
                       "created_at")
    ordering = ("id",)


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "sequence", "kind", "reference", "merchant", "created_at")
    list_filter = ("kind",)
    search_fields = ("id", "reference_id", "merchant__id")
    list_select_related = ("merchant",)
    readonly_fields = ("id", "sequence", "kind", "description", "reference", "merchant",
                       "created_at", "prev_hash", "hash")
    fields = readonly_fields
    inlines = [PostingInline]
    ordering = ("-sequence",)
    show_full_result_count = False  # a count(*) over millions of entries on every page view

    @admin.display(description="reference")
    def reference(self, entry: JournalEntry) -> str:
        return _reference_link(entry)


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "entry", "account", "amount", "currency", "balance_after",
                    "created_at")
    list_filter = ("currency",)
    search_fields = ("id", "entry__id", "merchant__id")
    list_select_related = ("entry", "account", "account__merchant")
    readonly_fields = ("id", "entry", "account", "merchant", "amount", "currency",
                       "balance_after", "created_at")
    ordering = ("-created_at", "-id")
    show_full_result_count = False
