"""Tables owned by the providers app: the sandbox provider's own books of charges.

The sandbox stands in for a remote PSP, so its state lives in its own tables (shared by the web
process and the workers) and is written in autocommit, never inside a caller's transaction.
"""

from django.db import models


class SandboxCharge(models.Model):
    reference = models.CharField(max_length=64, primary_key=True)
    merchant_reference = models.CharField(max_length=64, db_index=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16)
    captured = models.BigIntegerField(default=0)
    refunded = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.reference


class SandboxOperation(models.Model):
    """One row per provider idempotency key: a repeated key replays the stored answer."""

    idempotency_key = models.CharField(max_length=255, primary_key=True)
    operation = models.CharField(max_length=16)
    result = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.idempotency_key
