"""Events: an immutable record of every state change, written in the changing transaction."""

from django.db import models

from core.ids import PublicIdField
from core.models import Merchant


class Event(models.Model):
    id = PublicIdField(prefix="evt")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=64)  # e.g. payment.captured, refund.created
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=40)
    data = models.JSONField(help_text="Snapshot of the object right after the change.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["merchant", "-created_at", "-id"], name="event_merchant_recent"),
            models.Index(fields=["object_id", "created_at"], name="event_object"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.object_id}"
