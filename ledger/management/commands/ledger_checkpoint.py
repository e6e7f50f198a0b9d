"""`manage.py ledger_checkpoint`: sign and export a checkpoint of every account's chain head now
(beat does it every RECON_LEDGER_CHECKPOINT_INTERVAL_SECONDS); `--public-key` prints the key
auditors and merchants verify with."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ledger.checkpoints import checkpoint_create, public_key_hex


class Command(BaseCommand):
    help = "Sign and export a ledger checkpoint, or print the public key (--public-key)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--public-key", action="store_true",
                            help="print the Ed25519 public key (hex) and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["public_key"]:
            self.stdout.write(public_key_hex())
            return
        row = checkpoint_create()
        self.stdout.write(f"checkpoint {row.number}: {row.body['accounts']} accounts, "
                          f"root {row.body['root']}")
