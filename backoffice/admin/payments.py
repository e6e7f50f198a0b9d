"""Admin for payments, refunds, provider attempts and disputes: indexed search, a payment page
with its full timeline, and actions (refund, capture, cancel, open a dispute, resend the latest
webhook; dispute evidence and decisions) that call the API's services through
`backoffice.services`.

Nothing here saves a status or an amount: every field is read-only, nothing can be added or
deleted, and each action is one service call that checks its own permission.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from backoffice import services
from backoffice.action_views import ObjectActionsMixin, Outcome
from backoffice.admin_base import (
    ChoicesOnlyFilter,
    LargeTableMixin,
    ReadOnlyAdmin,
    StatusBadgeMixin,
)
from backoffice.admin_filters import ProviderFilter
from backoffice.admin_ids import TolerantIdsMixin, lookup_pk
from backoffice.balances import merchant_balance
from backoffice.exports import ExportMixin, columns, money
from backoffice.forms import (
    CaptureForm,
    DisputeDecisionForm,
    DisputeOpenForm,
    EvidenceFileForm,
    EvidenceForm,
    NoteForm,
    OptionalNoteForm,
    RefundForm,
)
from backoffice.models import ApprovalRequest, ApprovalStatus
from backoffice.selectors import (
    entries_for,
    payment_currencies,
    payment_search,
    payment_story,
)
from core.money import format_amount
from payments import files
from payments.files import attachment_response
from payments.models import (
    EVIDENCE_FILE_FIELDS,
    AttemptKind,
    Customer,
    Dispute,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    PaymentStatus,
    Refund,
)
from payments.selectors import dispute_files, disputes_due_soon, refundable_amount


def _amount(obj: Any) -> str:
    return format_amount(obj.amount, obj.currency)


def _evidence_files(dispute: Dispute) -> list[tuple[str, Any]]:
    """(evidence field, file) for each file the dispute's evidence names."""
    by_id = {row.pk: row for row in dispute_files(dispute)}
    return [(field, by_id[value]) for field, value in dispute.evidence.items() if value in by_id]


class CurrencyFilter(ChoicesOnlyFilter):
    title = "currency"
    parameter_name = "currency"
    field = "currency"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(code, code.upper()) for code in payment_currencies()]


class StatusFilter(ChoicesOnlyFilter):
    title = "status"
    parameter_name = "status__exact"  # the admin's own parameter, so old links keep working
    field = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(PaymentStatus.choices)


# -- payments --------------------------------------------------------------------------------
@admin.register(Payment)
class PaymentAdmin(ExportMixin, LargeTableMixin, StatusBadgeMixin, ObjectActionsMixin,
                   TolerantIdsMixin, ReadOnlyAdmin):
    list_display = ("id", "merchant_name", "amount_display", "status_label", "provider",
                    "created_at")
    list_filter = (StatusFilter, ProviderFilter, CurrencyFilter,
                   ("created_at", admin.DateFieldListFilter))
    search_fields = ("id",)  # shows the box; get_search_results decides what is searched
    search_help_text = ("Payment id (pay_…), refund id (re_…), dispute id (dp_…), merchant id "
                        "(acct_…) or name, provider reference, or description.")
    list_select_related = ("merchant",)
    ordering = ("-created_at",)
    actions = None
    fieldsets = [("All fields", {"classes": ["collapse"], "fields": [
        "id", "merchant", "amount", "currency", "status", "capture_method", "payment_method",
        "description", "metadata", "amount_authorized", "amount_captured", "amount_refunded",
        "amount_disputed", "provider", "provider_reference", "failure_code", "failure_message",
        "created_at", "updated_at"]})]
    readonly_fields = fieldsets[0][1]["fields"]
    action_names = ("refund", "capture", "cancel", "dispute", "resend")
    export_columns = columns(
        "id", "merchant_id", "merchant__name", "created_at", "updated_at", "status",
        "currency", money(), money("amount_authorized"), money("amount_captured"),
        money("amount_refunded"), money("amount_disputed"), "capture_method",
        "payment_method", "provider", "provider_reference", "failure_code", "description")

    @admin.display(description="merchant", ordering="merchant__name")
    def merchant_name(self, payment: Payment) -> str:
        return payment.merchant.name

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, payment: Payment) -> str:
        return _amount(payment)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Payment],
                           search_term: str) -> tuple[QuerySet[Payment], bool]:
        term = search_term.replace("\x00", "").strip()  # PostgreSQL refuses NUL in text
        return payment_search(queryset, term), False

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        story = payment_story(payment_id=lookup_pk(Payment, object_id))
        if story is None:
            return super().change_view(request, object_id, form_url, extra_context)
        payment = story.payment
        cur = payment.currency
        user = request.user
        context = {
            "story": story,
            "can": {name: user.has_perm(f"backoffice.{name}") for name in (
                "refund_payment", "capture_payment", "cancel_payment", "open_dispute",
                "resend_webhook")},
            # Which forms make sense in this state: the services' own rule (ACTION_STATUSES).
            "show": {action: payment.allows(action)
                     for action in ("refund", "capture", "cancel", "dispute")},
            "amounts": [(label, format_amount(value, cur)) for label, value in (
                ("Amount", payment.amount), ("Authorized", payment.amount_authorized),
                ("Captured", payment.amount_captured), ("Refunded", payment.amount_refunded),
                ("Disputed", payment.amount_disputed))],
            "refundable": format_amount(refundable_amount(payment), cur),
            "threshold": format_amount(services.refund_threshold(cur), cur),
            "refund_form": RefundForm(currency=cur),
            "capture_form": CaptureForm(currency=cur),
            "cancel_form": NoteForm(),
            "dispute_form": DisputeOpenForm(currency=cur),
            "approvals": list(ApprovalRequest.objects.filter(
                object_type="payment", object_id=payment.id).select_related("requested_by")
                .order_by("-requested_at")[:20]),
        }
        return super().change_view(request, object_id, form_url,
                                   {**context, **(extra_context or {})})

    # -- actions (POST only; each checks its permission first) -------------------------------
    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, payment: Payment, data: dict[str, Any]) -> Outcome:
            outcome = services.refund_request(
                actor=actor, payment_id=payment.pk, amount=data["amount"],
                reason=data["reason"], note=data["note"], form_key=data["form_key"])
            if outcome.approval is not None:
                approval = outcome.approval
                if outcome.is_repeat:
                    return (messages.INFO,
                            f"This form was already submitted: approval request {approval.id} "
                            f"for {_amount(approval)} is {approval.get_status_display()}. "
                            "Nothing new was requested.")
                limit = format_amount(services.refund_threshold(approval.currency),
                                      approval.currency)
                return (messages.WARNING,
                        f"Nothing has been refunded yet: {_amount(approval)} is above the "
                        f"{limit} threshold, so approval request {approval.id} now waits for an "
                        "approver (a different person).")
            refund = outcome.refund
            assert refund is not None
            if outcome.is_repeat:
                return (messages.INFO,
                        f"This form was already submitted: refund {refund.id} of "
                        f"{_amount(refund)} is {refund.status}. Nothing new was refunded.")
            if refund.status == "failed":
                why = refund.failure_message or refund.failure_code
                return (messages.ERROR,
                        f"Refund {refund.id} of {_amount(refund)} failed at the provider: {why}.")
            tail = ("" if refund.status == "succeeded" else
                    " The provider has not confirmed it yet; reconciliation will follow it up.")
            return f"Refund {refund.id} of {_amount(refund)} is {refund.status}.{tail}"

        return self._post(request, object_id, "refund_payment", RefundForm, run,
                          currency=lambda p: p.currency)

    def capture_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, payment: Payment, data: dict[str, Any]) -> Outcome:
            done = services.payment_capture_by_staff(actor=actor, payment_id=payment.pk,
                                                     amount=data["amount"],
                                                     final_capture=not data["partial"])
            return (f"Captured {format_amount(done.amount_captured, done.currency)}; the "
                    f"payment is {done.status}.")

        return self._post(request, object_id, "capture_payment", CaptureForm, run,
                          currency=lambda p: p.currency)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, payment: Payment, data: dict[str, Any]) -> Outcome:
            done = services.payment_cancel_by_staff(actor=actor, payment_id=payment.pk,
                                                    note=data["note"])
            return f"The payment is {done.status}."

        return self._post(request, object_id, "cancel_payment", NoteForm, run)

    def dispute_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, payment: Payment, data: dict[str, Any]) -> Outcome:
            due = data["due_by"]
            dispute, created = services.dispute_open_from_notice(
                actor=actor, payment_id=payment.pk, provider_reference=data["provider_reference"],
                reason=data["reason"], note=data["note"], amount=data["amount"],
                due_by=datetime.combine(due, time(23, 59), tzinfo=timezone.get_current_timezone())
                if due else None)
            if not created:
                return (messages.INFO,
                        f"This notice is already recorded as dispute {dispute.id} "
                        f"({_amount(dispute)}, {dispute.status}); nothing was changed.")
            return (f"Dispute {dispute.id} recorded: {_amount(dispute)} moved from the "
                    f"merchant's available balance to disputed; respond by "
                    f"{dispute.due_by:%Y-%m-%d}.")

        return self._post(request, object_id, "open_dispute", DisputeOpenForm, run,
                          currency=lambda p: p.currency)

    def resend_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, payment: Payment, data: dict[str, Any]) -> Outcome:
            deliveries = services.payment_webhook_resend_latest(actor=actor,
                                                                payment_id=payment.pk)
            return (f"Queued {len(deliveries)} new webhook deliver"
                    f"{'y' if len(deliveries) == 1 else 'ies'} of the latest event.")

        return self._post(request, object_id, "resend_webhook", OptionalNoteForm, run)


# -- refunds and attempts --------------------------------------------------------------------
@admin.register(Refund)
class RefundAdmin(ExportMixin, LargeTableMixin, TolerantIdsMixin, ReadOnlyAdmin):
    list_display = ("id", "payment", "merchant", "amount_display", "status", "reason",
                    "created_at")
    list_filter = ("status", "reason")
    search_fields = ("=id", "=payment__id", "=provider_reference")
    list_select_related = ("merchant", "payment")
    export_columns = columns("id", "payment_id", "merchant_id", "merchant__name", "created_at",
                             "status", "currency", money(), "reason", "origin",
                             "payment__provider", "provider_reference", "failure_code")
    ordering = ("-created_at",)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, refund: Refund) -> str:
        return _amount(refund)


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(LargeTableMixin, TolerantIdsMixin, ReadOnlyAdmin):
    list_display = ("id", "payment", "kind", "provider", "amount", "status", "error_code",
                    "latency_ms", "created_at")
    list_filter = ("kind", "status")
    search_fields = ("=id", "=payment__id", "=provider_reference")
    ordering = ("-created_at",)


# -- customers and saved payment methods -------------------------------------------------------
@admin.register(Customer)
class CustomerAdmin(LargeTableMixin, TolerantIdsMixin, ReadOnlyAdmin):
    list_display = ("id", "merchant", "email", "name", "created_at")
    search_fields = ("=id", "=email")
    list_select_related = ("merchant",)
    ordering = ("-created_at",)


@admin.register(PaymentMethod)
class PaymentMethodAdmin(LargeTableMixin, TolerantIdsMixin, ReadOnlyAdmin):
    """Saved cards: what the acquirer told us and where it is enrolled (never a card number;
    the network token stays encrypted and is not shown)."""

    list_display = ("id", "merchant", "customer", "brand", "last4", "enrolled_at",
                    "detached_at", "created_at")
    search_fields = ("=id", "=customer__id")
    list_select_related = ("merchant", "customer")
    exclude = ("network_token",)
    ordering = ("-created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PaymentMethod]:
        return super().get_queryset(request).prefetch_related("tokens")

    @admin.display(description="enrolled at")
    def enrolled_at(self, method: PaymentMethod) -> str:
        return ", ".join(f"{t.provider} ({t.origin})" for t in method.tokens.all())


# -- disputes --------------------------------------------------------------------------------
class DueSoonFilter(admin.SimpleListFilter):
    """The dashboard's queue: still waiting for evidence, deadline near or past."""

    title = "evidence due"
    parameter_name = "due"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("soon", f"Within {settings.DISPUTE_REMINDER_HOURS} h or overdue")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "soon":
            return queryset.filter(pk__in=disputes_due_soon(now=timezone.now()).values("pk"))
        return queryset


@admin.register(Dispute)
class DisputeAdmin(ExportMixin, LargeTableMixin, ObjectActionsMixin, TolerantIdsMixin,
                   ReadOnlyAdmin):
    """Disputes by due date: the first rows are the ones to answer first."""

    list_display = ("id", "payment_link", "merchant", "amount_display", "status", "reason",
                    "due_label", "created_at")
    list_filter = (DueSoonFilter, "status", "reason")
    search_fields = ("=id", "=payment__id", "=provider_reference")
    list_select_related = ("merchant",)
    ordering = ("due_by",)
    actions = None
    readonly_fields = ("id", "payment", "merchant", "amount", "currency", "reason", "status",
                       "evidence", "evidence_submitted_at", "due_by", "provider",
                       "provider_reference", "created_at", "updated_at", "closed_at",
                       "decided_by", "reminded_at", "provider_checked_at")
    fieldsets = [("All fields", {"classes": ["collapse"], "fields": readonly_fields})]
    action_names = ("evidence", "file", "refresh", "accept", "decide")
    export_columns = columns("id", "payment_id", "merchant_id", "merchant__name", "created_at",
                             "status", "reason", "currency", money(), "due_by",
                             "evidence_submitted_at", "closed_at", "provider",
                             "provider_reference")

    @admin.display(description="payment")
    def payment_link(self, dispute: Dispute) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:payments_payment_change",
                                                          args=[quote(dispute.payment_id)]),
                           dispute.payment_id)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, dispute: Dispute) -> str:
        return _amount(dispute)

    @admin.display(description="respond by", ordering="due_by")
    def due_label(self, dispute: Dispute) -> str:
        if not dispute.is_open:
            return f"{dispute.due_by:%Y-%m-%d} (closed)"
        days = (dispute.due_by - timezone.now()).days
        label = "OVERDUE" if days < 0 else ("today" if days == 0 else f"in {days} days")
        return format_html('<span class="bo-due{}">{} ({})</span>',
                           " bo-due-urgent" if days <= 2 else "",
                           f"{dispute.due_by:%Y-%m-%d}", label)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        dispute = Dispute.objects.select_related("merchant", "payment").filter(
            pk=lookup_pk(Dispute, object_id)).first()
        if dispute is None:
            return super().change_view(request, object_id, form_url, extra_context)
        context = {
            "dispute": dispute,
            "amount": _amount(dispute),
            "can": {name: request.user.has_perm(f"backoffice.{name}")
                    for name in ("manage_dispute", "accept_dispute")},
            "balances": merchant_balance(merchant_id=dispute.merchant_id,
                                         currency=dispute.currency),
            "entries": entries_for(reference_type="dispute", reference_id=dispute.id),
            "approvals": list(ApprovalRequest.objects.filter(
                object_type="dispute", object_id=dispute.id).select_related("requested_by")
                .order_by("-requested_at")[:10]),
            "pending_accept": ApprovalRequest.objects.filter(
                object_type="dispute", object_id=dispute.id,
                status=ApprovalStatus.PENDING).exists(),
            "evidence_form": EvidenceForm(),
            "file_form": EvidenceFileForm(),
            "evidence_files": [(EVIDENCE_FILE_FIELDS.get(field, field), found) for field, found
                               in _evidence_files(dispute)],
            "evidence_text": {key: value for key, value in dispute.evidence.items()
                              if not str(value).startswith("file_")},
            "submissions": list(PaymentAttempt.objects.filter(
                dispute=dispute, kind=AttemptKind.DISPUTE_EVIDENCE).order_by("-created_at")),
            "decision_form": DisputeDecisionForm(),
            "accept_form": NoteForm(),
        }
        return super().change_view(request, object_id, form_url,
                                   {**context, **(extra_context or {})})

    def evidence_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, dispute: Dispute, data: dict[str, Any]) -> Outcome:
            done = services.dispute_evidence_submit(actor=actor, dispute_id=dispute.pk,
                                                    evidence=data)
            return f"Evidence sent; the dispute is {done.status}."

        return self._post(request, object_id, "manage_dispute", EvidenceForm, run)

    def file_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, dispute: Dispute, data: dict[str, Any]) -> Outcome:
            upload = data["file"]
            added = services.dispute_evidence_file_add(
                actor=actor, dispute_id=dispute.pk, field=data["field"],
                content=files.read_limited(upload.chunks()), filename=upload.name or "")
            return (f"{added.filename} ({added.size} bytes, {added.get_content_type_display()}) "
                    f"attached as {EVIDENCE_FILE_FIELDS[data['field']].lower()}; it goes to the "
                    "provider with the evidence.")

        return self._post(request, object_id, "manage_dispute", EvidenceFileForm, run)

    def refresh_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, dispute: Dispute, data: dict[str, Any]) -> Outcome:
            done = services.dispute_refresh(actor=actor, dispute_id=dispute.pk)
            return f"The provider says dispute {done.id} is {done.status}."

        return self._post(request, object_id, "manage_dispute", forms.Form, run)

    def get_urls(self) -> list[Any]:
        download = path("<path:object_id>/files/<str:file_id>/",
                        self.admin_site.admin_view(self.download_view),
                        name="payments_dispute_download")
        return [download, *super().get_urls()]

    def download_view(self, request: HttpRequest, object_id: str, file_id: str
                      ) -> HttpResponse:
        """An evidence file of this dispute, as an attachment only (never rendered inline)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        dispute = get_object_or_404(Dispute, pk=lookup_pk(Dispute, object_id))
        found = next((row for _, row in _evidence_files(dispute) if row.pk == file_id), None)
        if found is None:
            raise Http404("This dispute's evidence names no such file.")
        return attachment_response(files.load(found.storage_name), filename=found.filename,
                                   content_type=found.content_type)

    def accept_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, dispute: Dispute, data: dict[str, Any]) -> Outcome:
            approval = services.dispute_accept_request(actor=actor, dispute_id=dispute.pk,
                                                       note=data["note"])
            return (messages.WARNING, f"Nothing is charged back yet: approval request "
                                      f"{approval.id} waits for an approver to accept the loss.")

        return self._post(request, object_id, "accept_dispute", NoteForm, run)

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Any, dispute: Dispute, data: dict[str, Any]) -> Outcome:
            decision = services.dispute_decision_record(
                actor=actor, dispute_id=dispute.pk, won=data["outcome"] == "won",
                note=data["note"], decision_reference=data["decision_reference"])
            if decision.approval is not None:
                return (messages.WARNING,
                        f"Nothing is charged back yet: a lost dispute charges "
                        f"{_amount(dispute)} back to the merchant, so approval request "
                        f"{decision.approval.id} now waits for an approver (a different "
                        "person).")
            done = decision.dispute
            return (f"Dispute {done.id} marked {done.status}: {_amount(done)} released back to "
                    "the merchant's available balance.")

        return self._post(request, object_id, "manage_dispute", DisputeDecisionForm, run)
