"""Encryption key rotation: after prepending a new key and running the command, secrets still
decrypt and are readable with the new key alone."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from core import crypto
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


def test_rotation_reencrypts_webhook_secrets_under_the_new_key(api, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    created = api.post("/webhook_endpoints", {"url": "http://127.0.0.1:9/h",
                                              "enabled_events": ["*"]}, key="rot-1")
    secret = created.json()["secret"]
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_encryption_keys")
    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key is gone
    endpoint = WebhookEndpoint.objects.get()
    assert crypto.decrypt(endpoint.secret_encrypted) == secret
    replay = api.post("/webhook_endpoints", {"url": "http://127.0.0.1:9/h",
                                             "enabled_events": ["*"]}, key="rot-1")
    assert replay.json()["secret"] == secret


def test_rotation_leaves_nothing_readable_only_by_the_old_key(api, merchant, simulator, settings):
    """Every store of secrets at rest, not only webhooks': a saved card's network token (else a
    saved card can never be enrolled at another acquirer once the old key is dropped) and the
    dispute evidence files (else they could never be downloaded or sent to a provider)."""
    from payments import files
    from payments.models import EvidenceFile, PaymentMethod
    from tests.test_dispute_evidence import PDF, upload
    from tests.test_saved_payment_methods import save_card

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    method = save_card(merchant, "cielo")
    token = crypto.decrypt(PaymentMethod.objects.get(pk=method.pk).network_token)
    assert token
    file_id = upload(api, PDF).json()["id"]
    api.post("/webhook_endpoints", {"url": "http://127.0.0.1:9/h", "enabled_events": ["*"]},
             key="rot-2")

    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    for store in ("1 saved card network token(s)", "1 dispute evidence file(s)",
                  "1 webhook endpoint secret(s)", "1 stored idempotent response(s)"):
        assert f"re-encrypted {store}" in out.getvalue(), out.getvalue()

    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key is gone
    assert crypto.decrypt(PaymentMethod.objects.get(pk=method.pk).network_token) == token
    assert files.load(EvidenceFile.objects.get(pk=file_id).storage_name) == PDF
    assert api.get(f"/files/{file_id}/contents").content == PDF
