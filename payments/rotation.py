"""What payments keeps encrypted at rest, re-encrypted under the newest field encryption key:
saved cards' network tokens and dispute evidence files (registered with core.crypto for
`manage.py rotate_encryption_keys`)."""

from __future__ import annotations

from django.db import transaction

from core import crypto
from payments import files
from payments.models import EvidenceFile, PaymentMethod

BATCH = 500


def network_tokens_reencrypt() -> int:
    done = 0
    ids = list(PaymentMethod.objects.exclude(network_token="").values_list("pk", flat=True))
    for start in range(0, len(ids), BATCH):
        with transaction.atomic():
            for method in PaymentMethod.objects.select_for_update().filter(
                    pk__in=ids[start:start + BATCH]).exclude(network_token=""):
                method.network_token = crypto.reencrypt(method.network_token)
                method.save(update_fields=["network_token"])
                done += 1
    return done


def evidence_files_reencrypt() -> int:
    return files.reencrypt_stored(
        EvidenceFile.objects.order_by("pk").values_list("storage_name", flat=True).iterator())
