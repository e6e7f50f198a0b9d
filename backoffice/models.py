"""Back-office tables: approval requests (maker-checker), the append-only staff audit log, ledger
verification runs, and the permissions the roles are made of.

Every money-moving row stays in the app that owns it; these tables only say who asked, who
approved and what the back-office saw. An approval request keeps the exact keyword arguments of
the service it will run, so the approver approves precisely what the maker asked for.
"""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from core.ids import PublicIdField
from core.models import Merchant


class BackofficeAccess(models.Model):
    """The home of the operation permissions that the roles grant (one per action); its table
    stays empty. Model permissions (view/add/change/delete) cannot express "may refund" or "may
    approve", so each admin action checks one of these instead. A real (empty) table rather than
    `managed = False`, because tools that walk every model's table must find one."""

    class Meta:
        default_permissions = ()
        verbose_name = "back-office access"
        permissions = [
            ("refund_payment", "Request refunds (above the threshold they wait for approval)"),
            ("capture_payment", "Capture authorized payments"),
            ("cancel_payment", "Cancel authorized payments"),
            ("open_dispute", "Record a dispute from a provider notice"),
            ("manage_dispute", "Submit dispute evidence and record the provider's decision"),
            ("accept_dispute", "Request that a dispute be accepted as lost"),
            ("resend_webhook", "Resend webhooks to merchants"),
            ("replay_provider_event", "Replay inbound provider events"),
            ("resolve_break", "Resolve or ignore reconciliation breaks"),
            ("request_ledger_adjustment", "Request manual ledger adjustments"),
            ("request_decline_rule_change",
             "Request a change to what a provider's decline code means"),
            ("run_ledger_verify", "Run the ledger verification"),
            ("approve_request", "Approve or reject requests made by another person"),
            ("export_data", "Export lists and reports as CSV or XLSX (every export is audited)"),
        ]

    def __str__(self) -> str:
        return "back-office access"


class ApprovalKind(models.TextChoices):
    REFUND = "refund", "Refund above the threshold"
    LEDGER_ADJUSTMENT = "ledger_adjustment", "Manual ledger adjustment"
    DISPUTE_ACCEPT = "dispute_accept", "Accept a dispute as lost"
    DECLINE_RULE = "decline_rule", "Change what a decline code means"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Waiting for an approver"
    APPROVED = "approved", "Approved, running"  # decided; the service has not finished yet
    EXECUTED = "executed", "Approved and done"
    FAILED = "failed", "Approved, but the action was refused"
    REJECTED = "rejected", "Rejected"


class ApprovalRequest(models.Model):
    """A change that needs a second person: the maker asks, a different approver decides.

    The database refuses self-approval (CHECK decided_by <> requested_by) even if the service
    were bypassed, and a decided request always names who decided and why."""

    id = PublicIdField(prefix="apr")
    kind = models.CharField(max_length=32, choices=ApprovalKind.choices)
    status = models.CharField(max_length=16, choices=ApprovalStatus.choices,
                              default=ApprovalStatus.PENDING)
    # None only for a platform-wide change (a decline rule): no merchant, no amount.
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+",
                                 null=True, blank=True)
    object_type = models.CharField(max_length=32,
                                   help_text="payment, dispute, account or decline_rule.")
    object_id = models.CharField(max_length=64)
    amount = models.BigIntegerField(help_text="Minor units of `currency`.")
    currency = models.CharField(max_length=3)
    params = models.JSONField(encoder=DjangoJSONEncoder,
                              help_text="The service's arguments, fixed when it was requested.")
    reason = models.TextField(help_text="Why the maker asks for it.")
    form_key = models.CharField(
        max_length=64, blank=True, default="",
        help_text="The one-time key of the form that asked for it: a double click or a re-posted "
                  "form finds this request instead of making a second one.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     related_name="+")
    requested_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   related_name="+", null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True, default="")
    executed_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder,
                              help_text="What the service produced (e.g. the refund id).")
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=ApprovalKind.values),
                                   name="approval_kind_known"),
            models.CheckConstraint(condition=Q(status__in=ApprovalStatus.values),
                                   name="approval_status_known"),
            models.CheckConstraint(condition=Q(amount__gte=1) | Q(kind="decline_rule", amount=0),
                                   name="approval_amount_positive"),
            models.CheckConstraint(condition=Q(merchant__isnull=False) | Q(kind="decline_rule"),
                                   name="approval_merchant_required"),
            models.CheckConstraint(condition=~Q(reason=""), name="approval_reason_required"),
            # The four-eyes rule, in the database: nobody approves their own request.
            models.CheckConstraint(condition=~Q(decided_by=F("requested_by")),
                                   name="approval_not_self_decided"),
            models.CheckConstraint(
                condition=(Q(status="pending", decided_by__isnull=True, decided_at__isnull=True)
                           | (~Q(status="pending") & Q(decided_by__isnull=False,
                                                       decided_at__isnull=False)
                              & ~Q(decision_comment=""))),
                name="approval_decision_complete"),
            # One open request to accept a given dispute; a second click finds the first.
            models.UniqueConstraint(fields=["kind", "object_id"],
                                    condition=Q(kind="dispute_accept",
                                                status__in=["pending", "approved"]),
                                    name="approval_one_open_dispute_accept"),
            # One request per submitted form: two requests for one refund could both be approved.
            models.UniqueConstraint(fields=["form_key"], condition=~Q(form_key=""),
                                    name="approval_one_per_form"),
        ]
        indexes = [
            models.Index(fields=["status", "-requested_at"], name="approval_queue"),
            models.Index(fields=["object_type", "object_id"], name="approval_object"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.get_kind_display()}, {self.status})"

    @property
    def is_open(self) -> bool:
        return self.status == ApprovalStatus.PENDING


class AuditEntry(models.Model):
    """One staff action: who, when, from where, on what, and the object before and after.

    Append-only: a PostgreSQL trigger refuses UPDATE and DELETE (migration 0002), and rows are
    written inside the transaction of the action they describe."""

    id = models.BigAutoField(primary_key=True)  # increasing: newest first is a PK scan
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                              related_name="+", null=True, blank=True)
    # Copied so the trail still reads right if the user is renamed.
    actor_username = models.CharField(max_length=150, blank=True, default="")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True, default="")
    request_id = models.CharField(max_length=40, blank=True, default="")
    action = models.CharField(max_length=64, help_text="e.g. payment.refund, approval.approve")
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    note = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "staff audit entry"
        verbose_name_plural = "staff audit log"
        indexes = [
            models.Index(fields=["object_type", "object_id", "-id"], name="audit_object"),
            models.Index(fields=["actor", "-id"], name="audit_actor"),
            models.Index(fields=["action", "-id"], name="audit_action"),
            models.Index(fields=["created_at"], name="audit_created"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username} {self.action}"


class VerifyStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Problems found"
    ERROR = "error", "Could not run"


class LedgerVerifyRun(models.Model):
    """One run of `ledger_verify` started from the admin, and what it found."""

    id = models.BigAutoField(primary_key=True)
    status = models.CharField(max_length=16, choices=VerifyStatus.choices,
                              default=VerifyStatus.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     related_name="+", null=True, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    entries = models.PositiveBigIntegerField(default=0)
    postings = models.PositiveBigIntegerField(default=0)
    accounts = models.PositiveBigIntegerField(default=0)
    problems = models.JSONField(default=list, blank=True,
                                help_text="The first bad row of each failed check.")
    report = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=VerifyStatus.values),
                                   name="verify_run_status_known"),
        ]

    def __str__(self) -> str:
        return f"ledger verification #{self.pk} ({self.status})"
