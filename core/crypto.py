"""Encryption of secrets we must read back (webhook signing secrets, stored responses that carry
them), with MultiFernet.

`settings.FIELD_ENCRYPTION_KEYS` is a list of Fernet keys (urlsafe base64 of 32 bytes, from
`Fernet.generate_key()`); the first encrypts, all decrypt, so a key is rotated by putting the new
one first and re-encrypting (`reencrypt`) before the old one is dropped. Without the setting a
development key is derived from SECRET_KEY; production settings require the real list.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["InvalidToken", "at_rest_register", "at_rest_stores", "decrypt", "decrypt_bytes",
           "encrypt", "encrypt_bytes", "reencrypt", "reencrypt_bytes"]


def _dev_key(secret_key: str) -> bytes:
    # A labelled hash, so this key is never the SECRET_KEY itself nor usable for anything else.
    digest = hashlib.sha256(b"clearhouse.field-encryption.v1:" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@functools.lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    material = [key.encode() for key in keys] or [_dev_key(secret_key)]
    return MultiFernet([Fernet(key) for key in material])


def _current() -> MultiFernet:
    # Read settings on every call (cheap thanks to the cache) so override_settings works.
    keys = tuple(getattr(settings, "FIELD_ENCRYPTION_KEYS", None) or ())
    return _fernet(keys, settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    """Raises InvalidToken if no configured key opens the token (a key was dropped too early)."""
    return _current().decrypt(token.encode("ascii")).decode()


def encrypt_bytes(plaintext: bytes) -> bytes:
    """Binary content (dispute evidence files at rest): the same keys, a Fernet token."""
    return _current().encrypt(plaintext)


def decrypt_bytes(token: bytes) -> bytes:
    return _current().decrypt(token)


def reencrypt(token: str) -> str:
    """The same plaintext under the current first key (for key rotation)."""
    return _current().rotate(token.encode("ascii")).decode("ascii")


def reencrypt_bytes(token: bytes) -> bytes:
    return _current().rotate(token)


# Everything encrypted at rest, by whoever owns it: name → a function that re-encrypts all of it
# under the first key and returns how many items it rewrote. Each app registers its own in
# AppConfig.ready(); `manage.py rotate_encryption_keys` runs them all, so a key can be dropped
# only when nothing is left under it.
_AT_REST: dict[str, Callable[[], int]] = {}


def at_rest_register(name: str, reencrypt_all: Callable[[], int]) -> None:
    _AT_REST[name] = reencrypt_all


def at_rest_stores() -> dict[str, Callable[[], int]]:
    return dict(_AT_REST)
