"""`manage.py rotate_encryption_keys`: re-encrypt everything at rest under the first key of
FIELD_ENCRYPTION_KEYS. Rotation: prepend the new key, deploy, run this, then drop the old key."""

from django.core.management.base import BaseCommand

from core import crypto


class Command(BaseCommand):
    help = ("Re-encrypt every secret at rest (webhook signing secrets, stored responses, saved "
            "card tokens, dispute evidence files) under the newest key.")

    def handle(self, *args: object, **options: object) -> None:
        for name, reencrypt_all in sorted(crypto.at_rest_stores().items()):
            self.stdout.write(f"re-encrypted {reencrypt_all()} {name} under the newest key")
        self.stdout.write("done: the older keys may now be removed from FIELD_ENCRYPTION_KEYS")
