"""Admin for the back-office's own tables (the approvals queue, the staff audit log, ledger
verification runs, the manual ledger adjustment form), plus audited admins for staff accounts,
TOTP devices and login lockouts, which replace the registrations of django.contrib.auth,
django_otp and axes (this app is installed after them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice import services
from backoffice.action_views import ObjectActionsMixin, Outcome, require_perm
from backoffice.admin_audit import AuditedModelAdmin
from backoffice.admin_base import (
    ExtraPagesMixin,
    LargeTableMixin,
    ReadOnlyAdmin,
    StatusBadgeMixin,
    status_badge,
)
from backoffice.admin_ids import TolerantIdsMixin, lookup_pk
from backoffice.audit import AUDIT_ACTIONS, Actor, audit_record, snapshot
from backoffice.exports import ExportMixin, columns, money
from backoffice.forms import ApprovalDecisionForm, ApprovalVerdictForm, LedgerAdjustmentForm
from backoffice.models import (
    ApprovalKind,
    ApprovalRequest,
    ApprovalStatus,
    AuditEntry,
    LedgerVerifyRun,
    VerifyStatus,
)
from core.errors import ClearhouseError
from core.money import format_amount

# -- approvals -------------------------------------------------------------------------------
_OBJECT_ADMIN = {"payment": "admin:payments_payment_change",
                 "dispute": "admin:payments_dispute_change"}


def approval_summary(approval: ApprovalRequest) -> str:
    """One sentence an approver can check against the evidence."""
    p = approval.params
    if approval.kind == ApprovalKind.DECLINE_RULE:
        return (f"From now on, decline code {p['code']} at {p['provider'] or 'every provider'} "
                f"means {p['meaning']} for failover and delayed retries.")
    amount = format_amount(approval.amount, approval.currency)
    if approval.kind == ApprovalKind.REFUND:
        return f"Refund {amount} of payment {p['payment_id']} (reason: {p['reason']})."
    if approval.kind == ApprovalKind.DISPUTE_ACCEPT and p.get("decision") == "lost":
        return (f"Record the provider's decision {p['decision_reference']}: dispute "
                f"{p['dispute_id']} is lost and {amount} is charged back to "
                f"{approval.merchant.name}.")
    if approval.kind == ApprovalKind.DISPUTE_ACCEPT:
        return (f"Accept dispute {p['dispute_id']} as lost: {amount} is charged back to "
                f"{approval.merchant.name}.")
    verb = "Credit" if p["direction"] == "credit" else "Debit"
    return (f"{verb} {amount} {'to' if verb == 'Credit' else 'from'} the {p['account_kind']} "
            f"balance of {approval.merchant.name} ({approval.merchant_id}), against "
            f"{p['counter_account']}.")


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ExportMixin, ExtraPagesMixin, LargeTableMixin, StatusBadgeMixin,
                           ObjectActionsMixin, TolerantIdsMixin, ReadOnlyAdmin):
    """The approvals queue: oldest pending first when filtered to pending."""

    extra_pages = (("ledger-adjustment/", "ledger_adjustment_view",
                    "backoffice_ledger_adjustment"),)
    list_display = ("id", "kind_label", "status_label", "merchant_name", "amount_display",
                    "requested_by", "requested_at", "decided_by")
    list_filter = ("status", "kind")
    search_fields = ("=id", "=object_id")
    search_help_text = "Request id (apr_…) or the id it is about (pay_…, dp_…)."
    export_columns = columns(
        "id", "requested_at", "kind", "status", "merchant_id", "merchant__name", "object_type",
        "object_id", "currency", money(), "reason", "requested_by__username",
        "decided_by__username", "decided_at", "decision_comment", "executed_at", "error",
        "params", "result")
    list_select_related = ("merchant", "requested_by", "decided_by")
    ordering = ("-requested_at",)
    actions = None
    readonly_fields = ("id", "kind", "status", "merchant", "object_type", "object_id", "amount",
                       "currency", "params", "reason", "requested_by", "requested_at",
                       "decided_by", "decided_at", "decision_comment", "executed_at", "result",
                       "error")
    fieldsets = [("All fields", {"classes": ["collapse"], "fields": readonly_fields})]
    action_names = ("decide", "execute")

    @admin.display(description="merchant", ordering="merchant__name")
    def merchant_name(self, approval: ApprovalRequest) -> str:
        return approval.merchant.name if approval.merchant else "— (platform)"

    @admin.display(description="what", ordering="kind")
    def kind_label(self, approval: ApprovalRequest) -> str:
        return approval.get_kind_display()

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, approval: ApprovalRequest) -> str:
        return format_amount(approval.amount, approval.currency) if approval.currency else "—"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None
                        ) -> HttpResponse:
        context = {"can_adjust": request.user.has_perm("backoffice.request_ledger_adjustment"),
                   "pending_url": f"{request.path}?status__exact=pending"}
        return super().changelist_view(request, {**context, **(extra_context or {})})

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        approval = (ApprovalRequest.objects.select_related("merchant", "requested_by",
                                                           "decided_by")
                    .filter(pk=lookup_pk(ApprovalRequest, object_id)).first())
        if approval is None:
            return super().change_view(request, object_id, form_url, extra_context)
        is_requester = approval.requested_by_id == request.user.pk
        may_approve = request.user.has_perm("backoffice.approve_request")
        target = _OBJECT_ADMIN.get(approval.object_type)
        result_links = []
        for key, name in (("refund", "admin:payments_refund_change"),
                          ("journal_entry", "admin:ledger_journalentry_change"),
                          ("dispute", "admin:payments_dispute_change")):
            if approval.result.get(key):
                result_links.append((key.replace("_", " "), approval.result[key],
                                     reverse(name, args=[quote(approval.result[key])])))
        context = {
            "approval": approval,
            "summary": approval_summary(approval),
            "amount": self.amount_display(approval),
            "target_url": reverse(target, args=[quote(approval.object_id)]) if target else "",
            "is_requester": is_requester,
            "may_approve": may_approve,
            "can_decide": (approval.status == ApprovalStatus.PENDING and may_approve
                           and not is_requester),
            "can_rerun": may_approve and services.approval_rerun_allowed(approval),
            "decision_form": ApprovalDecisionForm(),
            "result_links": result_links,
        }
        return super().change_view(request, object_id, form_url,
                                   {**context, **(extra_context or {})})

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Actor, approval: ApprovalRequest, data: dict[str, Any]) -> Outcome:
            done = services.approval_decide(actor=actor, approval_id=approval.pk,
                                            approve=data["approve"], comment=data["comment"])
            if done.status == ApprovalStatus.REJECTED:
                return f"Rejected {done.id}; nothing was changed."
            if done.status == ApprovalStatus.FAILED:
                return (messages.ERROR, f"Approved {done.id}, but the action was refused: "
                                        f"{done.error}")
            if done.status == ApprovalStatus.APPROVED:
                return (messages.WARNING,
                        f"Approved {done.id}; the action has not finished. If it still has "
                        f"not in {int(services.RERUN_AFTER.total_seconds() // 60)} minutes, "
                        "this page offers to run it again.")
            return f"Approved {done.id} and done: {approval_summary(done)}"

        return self._post(request, object_id, "approve_request", ApprovalVerdictForm, run)

    def execute_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(actor: Actor, approval: ApprovalRequest, data: dict[str, Any]) -> Outcome:
            if approval.status == ApprovalStatus.APPROVED and not \
                    services.approval_rerun_allowed(approval):
                minutes = int(services.RERUN_AFTER.total_seconds() // 60)
                return (messages.WARNING,
                        f"{approval.id} was approved less than {minutes} minutes ago and may "
                        "still be running; reload this page in a few minutes. Nothing was run.")
            done = services.approval_execute(actor=actor, approval_id=approval.pk)
            return f"{done.id} is now: {done.get_status_display()}."

        return self._post(request, object_id, "approve_request", _NoInput, run)

    def ledger_adjustment_view(self, request: HttpRequest) -> HttpResponse:
        """Ask for a manual ledger entry; it waits for an approver like every adjustment."""
        actor = require_perm(request, "request_ledger_adjustment")
        form = LedgerAdjustmentForm(request.POST or None,
                                    counter_accounts=services.counter_accounts(),
                                    initial={"merchant": request.GET.get("merchant", "")})
        return approval_request_view(
            self, request, form, lambda data: services.ledger_adjustment_request(
                actor=actor, merchant_id=data["merchant"].strip(), currency=data["currency"],
                account_kind=data["account_kind"], direction=data["direction"],
                counter_account=data["counter_account"], amount=data["amount"],
                note=data["note"]),
            title="Request a manual ledger adjustment",
            template="admin/backoffice/ledger_adjustment.html")


def approval_request_view(model_admin: admin.ModelAdmin, request: HttpRequest, form: Any,
                          ask: Callable[[dict[str, Any]], ApprovalRequest], *, title: str,
                          template: str) -> HttpResponse:
    """A form that asks for something a second person must approve: on a valid POST `ask`
    makes the approval request and the page goes to it; refusals show next to their field."""
    if request.method == "POST" and form.is_valid():
        try:
            approval = ask(form.cleaned_data)
        except ClearhouseError as exc:
            # Shown next to the field it is about, with what was typed kept.
            form.add_error(exc.param if exc.param in form.fields else None, exc.message)
        else:
            messages.warning(request, f"Nothing has changed yet: approval request "
                                      f"{approval.id} waits for an approver.")
            return HttpResponseRedirect(
                reverse("admin:backoffice_approvalrequest_change", args=[quote(approval.pk)]))
    context = {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta,
               "title": title, "form": form}
    return TemplateResponse(request, template, context)


class _NoInput(ApprovalDecisionForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["comment"].required = False


# -- the staff audit log ---------------------------------------------------------------------
class ActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in AUDIT_ACTIONS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(action=self.value()) if self.value() else queryset


class StaffFilter(admin.SimpleListFilter):
    title = "who"
    parameter_name = "actor"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        staff = get_user_model().objects.filter(is_staff=True).order_by("username")[:200]
        return [(str(user.pk), user.get_username()) for user in staff]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(actor_id=self.value()) if self.value() else queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(ExportMixin, LargeTableMixin, ReadOnlyAdmin):
    """Append-only: no one, not even a superuser, adds, edits or deletes a row here (and the
    database refuses UPDATE and DELETE anyway)."""

    list_display = ("id", "created_at", "actor_username", "ip_address", "action",
                    "object_label", "note_short")
    list_filter = (ActionFilter, StaffFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("=object_id", "=actor_username", "=request_id")
    search_help_text = "The object's id (pay_…, apr_…, brk_…), a username or a request id."
    export_columns = columns("id", "created_at", "actor_username", "ip_address", "request_id",
                             "action", "object_type", "object_id", "note", "before", "after",
                             "user_agent")
    ordering = ("-id",)
    actions = None
    readonly_fields = ("id", "created_at", "actor", "actor_username", "ip_address", "user_agent",
                       "request_id", "action", "object_type", "object_id", "note",
                       "before_json", "after_json")
    fields = readonly_fields

    @admin.display(description="object")
    def object_label(self, entry: AuditEntry) -> str:
        return f"{entry.object_type} {entry.object_id}"

    @admin.display(description="note")
    def note_short(self, entry: AuditEntry) -> str:
        return entry.note if len(entry.note) <= 80 else entry.note[:79] + "…"

    @admin.display(description="before")
    def before_json(self, entry: AuditEntry) -> str:
        from backoffice.templatetags.backoffice import pretty_json

        return format_html("<pre class='bo-pre'>{}</pre>", pretty_json(entry.before))

    @admin.display(description="after")
    def after_json(self, entry: AuditEntry) -> str:
        from backoffice.templatetags.backoffice import pretty_json

        return format_html("<pre class='bo-pre'>{}</pre>", pretty_json(entry.after))


# -- ledger verification ---------------------------------------------------------------------
@admin.register(LedgerVerifyRun)
class LedgerVerifyRunAdmin(ExtraPagesMixin, ReadOnlyAdmin):
    extra_pages = (("start/", "start_view", "backoffice_ledgerverifyrun_start"),)
    list_display = ("id", "status_label", "requested_by", "requested_at", "finished_at",
                    "entries", "postings", "accounts")
    list_filter = ("status",)
    ordering = ("-id",)
    readonly_fields = ("id", "status", "requested_by", "requested_at", "started_at",
                       "finished_at", "entries", "postings", "accounts", "report_text")
    fields = readonly_fields
    actions = None

    @admin.display(description="result", ordering="status")
    def status_label(self, run: LedgerVerifyRun) -> str:
        return status_badge(run.status, run.get_status_display())

    @admin.display(description="report")
    def report_text(self, run: LedgerVerifyRun) -> str:
        return format_html("<pre class='bo-pre'>{}</pre>", run.report or "—")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None
                        ) -> HttpResponse:
        context = {"can_verify": request.user.has_perm("backoffice.run_ledger_verify"),
                   "running": LedgerVerifyRun.objects.filter(
                       status__in=[VerifyStatus.QUEUED, VerifyStatus.RUNNING]).exists()}
        return super().changelist_view(request, {**context, **(extra_context or {})})

    def start_view(self, request: HttpRequest) -> HttpResponse:
        actor = require_perm(request, "run_ledger_verify")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run, created = services.ledger_verify_start(actor=actor)
        if created:
            messages.success(request, f"Verification #{run.pk} is queued. It reads every entry "
                                      "and posting; refresh this page to see the result.")
        else:
            messages.info(request, f"Verification #{run.pk} is already {run.status}; wait for "
                                   "it to finish, then refresh this page.")
        return HttpResponseRedirect(reverse("admin:backoffice_ledgerverifyrun_changelist"))


# -- staff accounts, TOTP devices and lockouts, audited --------------------------------------
User = get_user_model()
USER_FIELDS = ("id", "username", "first_name", "last_name", "email", "is_active", "is_staff",
               "is_superuser")


def _replace(model: Any, admin_class: type[admin.ModelAdmin]) -> None:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, admin_class)


# Only a superuser grants superuser status or permissions one by one; nobody but a superuser
# changes their own roles (an `admin` with auth.change_user would otherwise promote themselves).
SUPERUSER_ONLY_USER_FIELDS = ("is_superuser", "user_permissions")


class BackofficeUserAdmin(AuditedModelAdmin, UserAdmin):
    """Role grants (groups) and staff flags are what auditors ask about first."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return fields
        fields += SUPERUSER_ONLY_USER_FIELDS
        if obj is not None and obj.pk == request.user.pk:
            fields += ("groups",)
        return fields

    def audit_snapshot(self, obj: Any) -> dict[str, Any]:
        data = snapshot(obj, USER_FIELDS)
        if obj.pk:
            data["groups"] = sorted(obj.groups.values_list("name", flat=True))
            data["permissions"] = sorted(
                f"{app}.{code}" for app, code in obj.user_permissions.values_list(
                    "content_type__app_label", "codename"))
        return data

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = ""
                             ) -> HttpResponse:
        with transaction.atomic():
            response = super().user_change_password(request, id, form_url)
            if request.method == "POST" and response.status_code == 302:
                audit_record(actor=Actor.from_request(request), action="admin.password_change",
                             object_type=User._meta.label_lower, object_id=str(id))
        return response


class BackofficeGroupAdmin(AuditedModelAdmin, GroupAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # A role's permissions are code (backoffice.roles); only a superuser may change them
        # by hand, or an `admin` could grant their own group anything.
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else (*fields, "permissions")

    def audit_snapshot(self, obj: Any) -> dict[str, Any]:
        data = snapshot(obj)
        if obj.pk:
            data["permissions"] = sorted(
                f"{app}.{code}" for app, code in obj.permissions.values_list(
                    "content_type__app_label", "codename"))
        return data


class BackofficeTOTPDeviceAdmin(AuditedModelAdmin, TOTPDeviceAdmin):
    audit_fields = ("id", "user", "name", "confirmed", "digits", "step", "tolerance")  # no key


class BackofficeAccessAttemptAdmin(AuditedModelAdmin, AccessAttemptAdmin):
    """Deleting a lockout row unlocks someone: recorded like any other change."""

    audit_fields = ("id", "username", "ip_address", "failures_since_start", "attempt_time")


_replace(User, BackofficeUserAdmin)
_replace(Group, BackofficeGroupAdmin)
_replace(TOTPDevice, BackofficeTOTPDeviceAdmin)
_replace(AccessAttempt, BackofficeAccessAttemptAdmin)
