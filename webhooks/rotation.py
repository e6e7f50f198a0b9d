"""Webhook signing secrets re-encrypted under the newest field encryption key (registered with
core.crypto for `manage.py rotate_encryption_keys`)."""

from __future__ import annotations

from django.db import transaction

from core import crypto
from webhooks.models import WebhookEndpoint

BATCH = 500


def endpoint_secrets_reencrypt() -> int:
    done = 0
    ids = list(WebhookEndpoint.objects.values_list("pk", flat=True))
    for start in range(0, len(ids), BATCH):
        with transaction.atomic():
            for endpoint in WebhookEndpoint.objects.select_for_update().filter(
                    pk__in=ids[start:start + BATCH]):
                endpoint.secret_encrypted = crypto.reencrypt(endpoint.secret_encrypted)
                if endpoint.previous_secret_encrypted:
                    endpoint.previous_secret_encrypted = crypto.reencrypt(
                        endpoint.previous_secret_encrypted)
                endpoint.save(update_fields=["secret_encrypted", "previous_secret_encrypted"])
                done += 1
    return done
