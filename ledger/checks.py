"""Deploy checks for the ledger's tamper evidence: a real checkpoint signing key and an export
folder outside the database (both errors: production fails closed)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured

from core import dev_credentials


@register(deploy=True)
def check_ledger_checkpoints(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    from ledger.checkpoints import public_key_hex

    messages: list[CheckMessage] = []
    key = str(getattr(settings, "LEDGER_CHECKPOINT_SIGNING_KEY", "") or "")
    try:
        public_key_hex()
        valid = True
    except ImproperlyConfigured:
        valid = False
    if not valid or key == dev_credentials.DEV_LEDGER_CHECKPOINT_KEY:
        messages.append(Error(
            "LEDGER_CHECKPOINT_SIGNING_KEY is missing, not an Ed25519 seed, or the repository's "
            "development key: ledger checkpoints could be forged or would not be signed.",
            hint="Set it to 64 hex characters: python -c \"import os; print(os.urandom(32).hex())\""
                 "; publish the public key (manage.py ledger_checkpoint --public-key).",
            id="ledger.E001"))
    if not getattr(settings, "LEDGER_CHECKPOINT_DIR", ""):
        messages.append(Error(
            "LEDGER_CHECKPOINT_DIR is not set: checkpoints would be kept only in the database "
            "and the logs, so a database owner could delete them with the rows they cover, "
            "unseen by ledger_verify.",
            hint="Point it at storage the database role cannot write (an object-store mount, a "
                 "write-once volume).", id="ledger.E002"))
    return messages
