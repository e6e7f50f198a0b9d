"""Bank statements in the back-office: read-only statements and lines (what matched what), and an
upload form for finance staff with the operator's reconciliation right, which runs the same
`reconciliation.bank.bank_statement_import` as `manage.py recon_bank_import` and writes a staff
audit row with it."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from backoffice.action_views import require_perm
from backoffice.admin_base import (
    ExtraPagesMixin,
    ProblemsFirstLinesAdmin,
    ProblemsFirstLinesInline,
    ReadOnlyAdmin,
)
from backoffice.audit import audit_record, snapshot
from backoffice.services import BREAK_CLOSE_PERMISSIONS
from core.errors import ClearhouseError
from reconciliation.bank import MAX_STATEMENT_BYTES, bank_statement_import
from reconciliation.models import BankLine, BankMatch, BankStatement, BankStatementFormat

# Importing a statement is reconciliation work: the same right as working the breaks it opens.
IMPORT_PERMISSIONS = BREAK_CLOSE_PERMISSIONS
STATEMENT_FIELDS = ("id", "account", "statement_id", "format", "currency", "opening_balance",
                    "closing_balance", "from_date", "to_date", "checksum", "line_count")


class BankStatementUploadForm(forms.Form):
    file = forms.FileField(help_text="ISO 20022 camt.053 (XML) or the CSV format of "
                                     "docs/OPERATIONS.md, at most 20 MiB.")
    format = forms.ChoiceField(choices=[("", "Detect (XML is camt.053)"),
                                        *BankStatementFormat.choices], required=False)

    def clean_file(self) -> bytes:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_STATEMENT_BYTES:
            raise forms.ValidationError("The file is larger than 20 MiB.")
        return upload.read()


class BankLineInline(ProblemsFirstLinesInline):
    model = BankLine
    parent_field, matched = "statement", BankMatch.MATCHED
    fields = ("line_number", "booking_date", "direction", "amount", "currency", "status",
              "settlement_file", "payout_id", "bank_reference", "end_to_end_id",
              "counterparty", "remittance_info")
    readonly_fields = fields


@admin.register(BankStatement)
class BankStatementAdmin(ExtraPagesMixin, ProblemsFirstLinesAdmin, ReadOnlyAdmin):
    extra_pages = (("upload/", "upload_view", "reconciliation_bankstatement_upload"),)
    list_display = ("id", "account", "statement_id", "currency", "from_date", "to_date",
                    "line_count", "imported_by", "imported_at")
    list_filter = ("currency", "format")
    search_fields = ("=id", "=statement_id", "=account", "=checksum")
    exclude = ("raw",)
    readonly_fields = ("id", "account", "statement_id", "format", "currency", "opening_balance",
                       "closing_balance", "from_date", "to_date", "checksum", "size_bytes",
                       "line_count", "imported_by", "imported_at")
    ordering = ("-imported_at",)
    inlines = [BankLineInline]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        actor = require_perm(request, *IMPORT_PERMISSIONS)  # 403 before the file is read
        form = BankStatementUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                with transaction.atomic():  # the statement and its audit row, or neither
                    result = bank_statement_import(content=form.cleaned_data["file"],
                                                   format=form.cleaned_data["format"] or None,
                                                   imported_by=actor.username)
                    if result.created:
                        audit_record(actor=actor, action="bank_statement.import",
                                     object_type="bank_statement", object_id=result.statement.id,
                                     after=snapshot(result.statement, STATEMENT_FIELDS))
            except ClearhouseError as exc:
                form.add_error("file", exc.message)
            else:
                statement = result.statement
                if result.created:
                    messages.success(request, f"Imported {statement.id}: {result.lines} lines, "
                                              f"{result.matched} matched, {result.breaks} new "
                                              "break(s) in the queue.")
                else:
                    messages.info(request, f"This file was already imported as {statement.id}; "
                                           "nothing changed.")
                return HttpResponseRedirect(reverse(
                    "admin:reconciliation_bankstatement_change", args=[quote(statement.pk)]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Import a bank statement", "form": form}
        return TemplateResponse(request, "admin/reconciliation/bankstatement/upload.html",
                                context)
