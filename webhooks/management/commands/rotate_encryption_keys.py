"""`manage.py rotate_encryption_keys`: re-encrypt every secret at rest under the first key of
FIELD_ENCRYPTION_KEYS. Rotation: prepend the new key, deploy, run this, then drop the old key.
It lives with webhooks, the highest app whose secrets it re-encrypts (core's stored responses
are the other)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from core import crypto
from core.models import IdempotencyKey
from webhooks.models import WebhookEndpoint

BATCH = 500


class Command(BaseCommand):
    help = "Re-encrypt webhook signing secrets and stored secret responses under the newest key."

    def handle(self, *args: object, **options: object) -> None:
        endpoints = self._endpoints()
        responses = self._responses()
        self.stdout.write(f"re-encrypted {endpoints} webhook endpoint secret(s) and "
                          f"{responses} stored idempotent response(s) under the newest key")

    def _endpoints(self) -> int:
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
                    endpoint.save(update_fields=["secret_encrypted",
                                                 "previous_secret_encrypted"])
                    done += 1
        return done

    def _responses(self) -> int:
        done = 0
        rows = IdempotencyKey.objects.filter(response_body__has_key="encrypted_response")
        for row in rows.iterator(chunk_size=BATCH):
            body = {"encrypted_response": crypto.reencrypt(row.response_body["encrypted_response"])}
            IdempotencyKey.objects.filter(pk=row.pk).update(response_body=body)
            done += 1
        return done
