"""Read-only admin for accounts (balances per merchant and currency), journal entries (with their
postings) and postings, plus a balances table.

Nothing here can add, change or delete a row: the ledger moves only through `entry_post`, and
mistakes are corrected with a reversing entry or an approved adjustment (back-office approvals),
never an edit. "Verify now" lives with the verification runs in the back-office app.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from backoffice.admin_base import ExtraPagesMixin, LargeTableMixin, ReadOnlyAdminMixin
from backoffice.admin_ids import TolerantIdsMixin
from backoffice.balances import merchant_balances
from backoffice.exports import Column, ExportMixin, columns, money
from core.money import format_amount
from ledger.models import Account, Checkpoint, JournalEntry, Posting
from ledger.selectors import entry_list_for

# reference_type → admin change view of the business object; unknown or unregistered types
# are shown as plain text.
_REFERENCE_ADMIN = {
    "payment": "admin:payments_payment_change",
    "refund": "admin:payments_refund_change",
    "dispute": "admin:payments_dispute_change",
    "payout": "admin:wallet_payout_change",
    "deposit": "admin:wallet_deposit_change",
    "journal_entry": "admin:ledger_journalentry_change",
    "approval": "admin:backoffice_approvalrequest_change",
}


def _reference_link(entry: JournalEntry) -> str:
    label = f"{entry.reference_type} {entry.reference_id}"
    try:
        url = reverse(_REFERENCE_ADMIN[entry.reference_type], args=[quote(entry.reference_id)])
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
    fields = ("id", "account", "amount_display", "balance_after_display")
    readonly_fields = fields
    ordering = ("account_id",)
    extra = 0
    can_delete = False
    show_change_link = True

    @admin.display(description="amount")
    def amount_display(self, posting: Posting) -> str:
        return format_amount(posting.amount, posting.currency)

    @admin.display(description="balance after")
    def balance_after_display(self, posting: Posting) -> str:
        return format_amount(posting.balance_after, posting.currency)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("account")


@admin.register(Account)
class AccountAdmin(ExtraPagesMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    extra_pages = (("balances/", "balances_view", "ledger_account_balances"),)
    list_display = ("id", "owner", "label", "currency", "balance_display", "version",
                    "created_at")
    list_filter = ("kind", "currency")
    search_fields = ("=merchant__id", "merchant__name", "=provider")
    search_help_text = "Merchant id (acct_…) or name, or a provider code."
    list_select_related = ("merchant",)
    readonly_fields = ("id", "merchant", "kind", "provider", "shard", "currency",
                       "balance_display", "version", "head_hash", "created_at")
    fields = readonly_fields
    ordering = ("id",)

    @admin.display(description="owner", ordering="merchant__name")
    def owner(self, account: Account) -> str:
        return account.merchant.name if account.merchant_id else "platform"

    @admin.display(description="account", ordering="kind")
    def label(self, account: Account) -> str:
        # provider_clearing is split into shards (summed on read): "#3" names the row.
        return account.label

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, account: Account) -> str:
        return format_amount(account.balance, account.currency)

    def balances_view(self, request: HttpRequest) -> HttpResponse:
        """Pending, available, reserved and disputed side by side, per merchant and currency."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        merchant_id = request.GET.get("merchant", "").strip() or None
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Balances per merchant and currency", "merchant": merchant_id or "",
                   "rows": merchant_balances(merchant_id=merchant_id),
                   "kinds": ["pending", "available", "reserved", "disputed"]}
        return TemplateResponse(request, "admin/ledger/account/balances.html", context)


@admin.register(JournalEntry)
class JournalEntryAdmin(LargeTableMixin, TolerantIdsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "sequence", "kind", "reference", "merchant", "created_at")
    list_filter = ("kind",)
    search_fields = ("=id", "=reference_id", "=merchant__id")
    search_help_text = "Entry id (txn_…), the id it explains (pay_…, re_…, dp_…) or a merchant id."
    list_select_related = ("merchant",)
    readonly_fields = ("id", "sequence", "kind", "description", "reference", "merchant",
                       "created_at", "hash")
    fields = readonly_fields
    inlines = [PostingInline]
    ordering = ("-sequence",)

    @admin.display(description="reference")
    def reference(self, entry: JournalEntry) -> str:
        return _reference_link(entry)


@admin.register(Posting)
class PostingAdmin(ExportMixin, LargeTableMixin, TolerantIdsMixin, ReadOnlyAdminMixin,
                   admin.ModelAdmin):
    list_display = ("id", "entry", "account", "amount_display", "balance_after_display",
                    "created_at")
    list_filter = ("currency",)
    search_fields = ("=id", "=entry__id", "=merchant__id")
    list_select_related = ("entry", "account", "account__merchant")
    readonly_fields = ("id", "entry", "account", "merchant", "amount", "currency",
                       "balance_after", "created_at", "account_version", "prev_hash", "hash")
    # A balance transaction per row, as a merchant's finance team reconciles them.
    export_columns = columns(
        "id", "created_at", "entry_id", Column("type", "entry__kind"),
        "entry__reference_type", "entry__reference_id", "merchant_id",
        Column("balance_type", "account__kind"), Column("provider", "account__provider"),
        "currency", money(), money("balance_after"), "account_version")
    ordering = ("-created_at", "-id")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, posting: Posting) -> str:
        return format_amount(posting.amount, posting.currency)

    @admin.display(description="balance after")
    def balance_after_display(self, posting: Posting) -> str:
        return format_amount(posting.balance_after, posting.currency)


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Signed checkpoints of every account's chain head (ledger/checkpoints.py)."""

    list_display = ("number", "created_at", "accounts", "root")
    readonly_fields = ("number", "created_at", "body", "signature")
    fields = readonly_fields
    ordering = ("-number",)

    @admin.display(description="accounts")
    def accounts(self, checkpoint: Checkpoint) -> int:
        return int(checkpoint.body.get("accounts", 0))

    @admin.display(description="signed root")
    def root(self, checkpoint: Checkpoint) -> str:
        return str(checkpoint.body.get("root", ""))[:16] + "…"

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("heads")
