"""Reconciliation's admin: read-only job runs, checks and settlement files (with their lines),
and the plain breaks admin, whose only write is resolve / ignore through `break_resolve` with a
note (registered as the back-office's queue, `backoffice.admin.break_queue`)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from backoffice.admin_base import (
    ProblemsFirstLinesAdmin,
    ProblemsFirstLinesInline,
    ReadOnlyAdminMixin,
)
from backoffice.exports import Column, ExportMixin, columns
from core.errors import ClearhouseError
from reconciliation.models import (
    BreakAudit,
    BreakStatus,
    JobRun,
    MatchStatus,
    ReconciliationBreak,
    ReconciliationCheck,
    SettlementFile,
    SettlementLine,
)
from reconciliation.selectors import settlement_file_head
from reconciliation.services import break_resolve


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("job", "started_at", "finished_at", "duration", "examined", "fixed",
                    "broken", "has_error", "host")
    list_filter = ("job", "started_at")
    readonly_fields = ("job", "started_at", "finished_at", "examined", "fixed", "broken",
                       "error", "host", "details")
    date_hierarchy = "started_at"
    ordering = ("-started_at",)
    show_full_result_count = False

    @admin.display(description="duration")
    def duration(self, run: JobRun) -> str:
        if run.finished_at is None:
            return "running or died"
        return f"{(run.finished_at - run.started_at).total_seconds():.1f} s"

    @admin.display(boolean=True, description="error")
    def has_error(self, run: JobRun) -> bool:
        return bool(run.error)


@admin.register(ReconciliationCheck)
class ReconciliationCheckAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("object_type", "object_id", "checks", "last_result", "next_check_at",
                    "closed_at", "stuck_since")
    list_filter = ("object_type", "last_result")
    search_fields = ("=object_id", "=attempt_id")
    ordering = ("-created_at",)


class SettlementLineInline(ProblemsFirstLinesInline):
    model = SettlementLine
    parent_field, matched = "file", MatchStatus.MATCHED
    fields = ("line_number", "type", "status", "provider_reference", "refund_reference",
              "currency", "gross", "fee", "net", "payment_id", "refund_id", "settled_at")
    readonly_fields = fields


@admin.register(SettlementFile)
class SettlementFileAdmin(ProblemsFirstLinesAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "provider", "file_date", "line_count", "size_bytes", "imported_at")
    list_filter = ("provider", "file_date")
    search_fields = ("=id", "=checksum")
    fields = ("id", "provider", "file_date", "checksum", "size_bytes", "line_count",
              "imported_at", "preview")
    readonly_fields = fields
    ordering = ("-file_date", "provider")
    inlines = [SettlementLineInline]

    @admin.display(description="raw file (first 2 KB)")
    def preview(self, file: SettlementFile) -> str:
        return format_html("<pre>{}</pre>", settlement_file_head(file_id=file.pk, size=2048)
                           .decode("utf-8", errors="replace"))


@admin.register(SettlementLine)
class SettlementLineAdmin(ExportMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("file", "line_number", "type", "status", "provider_reference", "currency",
                    "gross", "fee", "payment_id", "settled_at")
    list_filter = ("provider", "status", "type")
    search_fields = ("=provider_reference", "=refund_reference", "=payment_id", "=file__id")
    export_columns = columns(
        "file_id", "line_number", "provider", "type", "status", "provider_reference",
        "refund_reference", "merchant_reference", "transaction_date", "settled_at", "currency",
        *(Column(name, name, currency="currency") for name in ("gross", "fee", "net")),
        "payment_id", "refund_id")
    show_full_result_count = False
    ordering = ("-id",)


class BreakAuditInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = BreakAudit
    fields = ("created_at", "action", "from_status", "user", "note")
    readonly_fields = fields
    extra = 0
    can_delete = False


class ResolveForm(forms.Form):
    status = forms.ChoiceField(choices=[(BreakStatus.RESOLVED, "Resolved"),
                                        (BreakStatus.IGNORED, "Ignored")])
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
                           help_text="Required: what was found and what was done.")


class ReconciliationBreakAdmin(ExportMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "type", "status", "provider", "payment_id", "provider_reference",
                    "currency", "our_amount", "provider_amount", "created_at")
    list_filter = ("status", "type", "provider")
    search_fields = ("=id", "=payment_id", "=refund_id", "=provider_reference",
                     "=refund_reference", "key")
    readonly_fields = ("id", "type", "key", "status", "provider", "payment_id", "refund_id",
                       "provider_reference", "refund_reference", "currency", "our_amount",
                       "provider_amount", "our_data", "provider_data", "settlement_line",
                       "resolution_note", "resolved_by", "resolved_at", "created_at")
    ordering = ("-created_at",)
    inlines = [BreakAuditInline]
    actions = ["resolve_breaks"]
    export_columns = columns(
        "id", "created_at", "type", "status", "provider", "payment_id", "refund_id",
        "provider_reference", "refund_reference", "currency",
        *(Column(name, name, currency="currency") for name in ("our_amount", "provider_amount")),
        "resolved_by__username", "resolved_at", "resolution_note", "key")

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        # The change form stays read-only; closing a break needs the model's change permission.
        return request.user.has_perm("reconciliation.change_reconciliationbreak")

    bulk_close_limit = 500  # breaks one bulk action closes (each in its own transaction)

    def close_break(self, request: HttpRequest, break_id: str, *, note: str, status: str
                    ) -> None:
        """Close one break; the back-office overrides it with its audited service."""
        break_resolve(break_id=break_id, user=request.user, note=note, status=status)

    @admin.action(description="Resolve or ignore selected breaks (a note is required)",
                  permissions=["resolve"])
    def resolve_breaks(self, request: HttpRequest,
                       queryset: QuerySet[ReconciliationBreak]) -> HttpResponse | None:
        form = ResolveForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            done, selected = 0, queryset.count()
            if selected > self.bulk_close_limit:
                self.message_user(request, f"Only the first {self.bulk_close_limit} of "
                                           f"{selected} selected breaks are closed in one go; "
                                           "run the action again for the rest.",
                                  messages.WARNING)
            for break_id in queryset.values_list("pk", flat=True)[:self.bulk_close_limit]:
                try:
                    self.close_break(request, break_id, note=form.cleaned_data["note"],
                                     status=form.cleaned_data["status"])
                    done += 1
                except ClearhouseError as exc:
                    self.message_user(request, f"{break_id}: {exc.message}", messages.WARNING)
            self.message_user(request, f"{done} break(s) closed.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/reconciliation/resolve_breaks.html", {
            **self.admin_site.each_context(request), "title": "Resolve breaks",
            "opts": self.model._meta, "breaks": queryset, "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })
