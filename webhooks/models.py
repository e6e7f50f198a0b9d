"""Events (an immutable record of every state change) and the outbox that delivers them:
webhook endpoints, one delivery row per (event, endpoint) and one attempt row per HTTP try."""

from django.db import models
from django.db.models import Q

from core import versions
from core.ids import PublicIdField
from core.models import Merchant


class Event(models.Model):
    id = PublicIdField(prefix="evt")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=64)  # e.g. payment.captured, refund.created
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=40)
    data = models.JSONField(help_text="Snapshot of the object right after the change.")
    # The version `data` was built in (core.versions renders it in any other on the way out).
    api_version = models.CharField(max_length=10, default=versions.latest)
    created_at = models.DateTimeField(auto_now_add=True)
    # The event stream (webhooks.stream): the event's position in the stream every relay
    # publishes, and its number among its object's events. Both are given once, by the
    # sequencer, after the event's transaction committed (so positions follow commit order and
    # an event's object's earlier events always have smaller ones); null until then. The
    # insertion order the sequencer walks is the column `insert_order` (an identity column the
    # database fills; migration 0006), which Django does not map.
    seq = models.BigIntegerField(null=True, blank=True, editable=False)
    object_seq = models.IntegerField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["merchant", "-created_at", "-id"], name="event_merchant_recent"),
            models.Index(fields=["object_id", "created_at"], name="event_object"),
            models.Index(fields=["seq"], name="event_stream_seq",
                         condition=Q(seq__isnull=False)),
            models.Index(fields=["object_id", "-object_seq"], name="event_object_seq",
                         condition=Q(object_seq__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.object_id}"


class EventRelayCursor(models.Model):
    """How far one relay (one broker sink) has published the event stream: the highest `seq`
    its broker acknowledged. Advanced only after the acknowledgement, so a relay killed in
    between publishes that batch again (at least once; consumers drop duplicates by event id)."""

    name = models.CharField(max_length=64, primary_key=True)
    position = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.position}"


class EndpointStatus(models.TextChoices):
    ENABLED = "enabled"
    DISABLED = "disabled"


# In `enabled_events`, alone: every event type.
WILDCARD = "*"


class WebhookEndpoint(models.Model):
    """Where a merchant wants events sent. The signing secret is stored encrypted (it must be
    recoverable to sign), never hashed and never rendered after the create/rotate response."""

    id = PublicIdField(prefix="we")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT,
                                 related_name="webhook_endpoints")
    url = models.CharField(max_length=2048)
    enabled_events = models.JSONField(default=list,
                                      help_text='Event types, or ["*"] for every type.')
    description = models.CharField(max_length=500, blank=True, default="")
    # Deliveries render in this version: the create request's (its merchant's, or the
    # Clearhouse-Version it sent), so a merchant's upgrade never surprises a live receiver.
    api_version = models.CharField(max_length=10, default=versions.latest)
    status = models.CharField(max_length=16, choices=EndpointStatus.choices,
                              default=EndpointStatus.ENABLED)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    secret_encrypted = models.TextField(editable=False)
    previous_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    failing_since = models.DateTimeField(
        null=True, blank=True,
        help_text="First failed attempt of the current failure streak; cleared by a success.")
    # The endpoint's circuit (webhooks.services): failed attempts in a row, and while
    # `circuit_open_until` is ahead, none of its deliveries is claimed; they wait, due, in
    # the outbox instead of occupying workers.
    consecutive_failures = models.PositiveIntegerField(default=0, db_default=0, editable=False)
    circuit_open_until = models.DateTimeField(null=True, blank=True, editable=False)
    # The create request's Idempotency-Key and fingerprint (core.idempotency): a key reused
    # with other parameters answers 422 even after the key's own row is reaped.
    idempotency_key = models.CharField(max_length=255, blank=True, default="", db_default="",
                                       editable=False)
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="",
                                               db_default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Soft delete: the delivery log outlives the endpoint, and a worker mid-send still finds
    # the row it claimed.
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["merchant", "-created_at", "-id"], name="endpoint_merchant_recent",
                         condition=Q(deleted_at__isnull=True)),
        ]
        constraints = [
            models.UniqueConstraint(fields=["merchant", "idempotency_key"],
                                    condition=~Q(idempotency_key=""),
                                    name="endpoint_idempotency_key_per_merchant"),
        ]

    def __str__(self) -> str:
        return f"{self.url} ({self.id})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One event owed to one endpoint: the outbox row. Written in the transaction that records
    the event; a worker or the sweeper claims it (lease) and sends it outside any transaction."""

    id = PublicIdField(prefix="wd")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT,
                                 related_name="deliveries")
    # No database foreign key: events are partitioned by month, and a partitioned table's unique
    # keys include the partition key. The trigger webhooks_delivery_event_exists checks instead.
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="deliveries",
                              db_constraint=False)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True,
                                           help_text="When the next try is due; null once final.")
    locked_until = models.DateTimeField(
        null=True, blank=True,
        help_text="Lease of the worker that claimed the row; others skip it until then.")
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-created_at", "-id"],
                         name="delivery_endpoint_recent"),
            # The sweeper's scan: only rows still owed, ordered by due time.
            models.Index(fields=["next_attempt_at"], name="delivery_due",
                         condition=Q(status="pending")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="pending") | Q(next_attempt_at__isnull=False),
                name="delivery_pending_has_due_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class WebhookDeliveryAttempt(models.Model):
    """One HTTP try of a delivery, kept for the merchant's and the operator's delivery log."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE,
                                 related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    latency_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_snippet = models.TextField(blank=True, default="")  # ≤ 1 KiB of the body
    error = models.CharField(max_length=500, blank=True, default="")
    is_success = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}"


class InboxStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSED = "processed"
    HELD = "held"  # waits for an earlier event of the same object (e.g. refund before capture)
    IGNORED = "ignored"  # verified but about nothing we know; kept for the record
    FAILED = "failed"  # processing kept failing; an operator can replay it


class ProviderEvent(models.Model):
    """Inbound provider webhook, stored verbatim (after its signature checked) before anything
    else happens. Unique on (provider, provider event id): a duplicate changes nothing."""

    provider = models.CharField(max_length=32)
    provider_event_id = models.CharField(max_length=128)
    type = models.CharField(max_length=64)
    provider_reference = models.CharField(max_length=128, blank=True, default="")
    merchant_reference = models.CharField(max_length=128, blank=True, default="")
    raw_body = models.TextField()
    headers = models.JSONField(default=dict, help_text="Request headers, signatures removed.")
    status = models.CharField(max_length=16, choices=InboxStatus.choices,
                              default=InboxStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "provider_event_id"],
                                    name="provider_event_unique"),
            models.CheckConstraint(condition=Q(status__in=InboxStatus.values),
                                   name="provider_event_status_known"),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="provider_event_due"),
            models.Index(fields=["provider", "provider_reference"], name="provider_event_ref"),
            models.Index(fields=["merchant_reference"], name="provider_event_merchant_ref"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.type} {self.provider_event_id}"
