"""Encryption key rotation: after prepending a new key and running the command, secrets still
decrypt and are readable with the new key alone."""

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
