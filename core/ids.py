"""Prefixed opaque public ids (`pay_…`, `re_…`, `evt_…`) and the model field that generates them."""

import os
import string

from django.db import models

_ALPHABET = string.ascii_letters + string.digits
ID_RANDOM_LENGTH = 24
# Bytes 0-247 map onto the alphabet four times over (248 = 4 × 62), so each kept byte is one
# uniform character; bytes 248-255 are dropped rather than folded in, which would bias it.
_KEEP = len(_ALPHABET) * (256 // len(_ALPHABET))
_TO_ALPHABET = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _KEEP else 0
                     for b in range(256))
_DROP = bytes(range(_KEEP, 256))
_DRAW = ID_RANDOM_LENGTH + 8  # 8 spare bytes: 3 % of bytes are dropped, a redraw is rare


def new_id(prefix: str) -> str:
    """A random base62 id: 24 chars ≈ 143 bits, never derived from a sequence or a timestamp.
    One os.urandom call (the CSPRNG `secrets` uses), not one per character."""
    chars = b""
    while len(chars) < ID_RANDOM_LENGTH:
        chars += os.urandom(_DRAW).translate(_TO_ALPHABET, _DROP)
    return f"{prefix}_{chars[:ID_RANDOM_LENGTH].decode()}"


class IdGenerator:
    """A picklable default callable for model fields (migrations need to serialise it)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self) -> str:
        return new_id(self.prefix)

    def deconstruct(self) -> tuple[str, tuple[str], dict]:
        return ("core.ids.IdGenerator", (self.prefix,), {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdGenerator) and other.prefix == self.prefix

    def __hash__(self) -> int:
        return hash(self.prefix)


class PublicIdField(models.CharField):
    """Primary key `<prefix>_<24 random chars>`, generated on creation, never editable."""

    def __init__(self, prefix: str = "", **kwargs: object) -> None:
        self.prefix = prefix
        kwargs.setdefault("max_length", 40)
        kwargs.setdefault("primary_key", True)
        kwargs.setdefault("editable", False)
        if prefix:
            kwargs.setdefault("default", IdGenerator(prefix))
        super().__init__(**kwargs)

    def deconstruct(self):  # type: ignore[no-untyped-def]
        name, path, args, kwargs = super().deconstruct()
        kwargs["prefix"] = self.prefix
        kwargs.pop("default", None)
        return name, path, args, kwargs
