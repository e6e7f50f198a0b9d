"""Dispute evidence files at rest: what an upload is (by its bytes, never its name or declared
type), and reading and writing them encrypted in EVIDENCE_STORAGE_DIR under random names with no
extension, outside anything a web server serves. Nothing here is ever executed or rendered."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.http import HttpResponse

from core import crypto
from core.errors import InvalidRequest, PayloadTooLarge
from payments.checks import served_overlaps
from payments.models import FileType

# The first bytes of each accepted type, and how a complete file of that type ends (a truncated
# upload is refused rather than sent to a provider as evidence).
_SIGNATURES: tuple[tuple[bytes, FileType], ...] = (
    (b"%PDF-", FileType.PDF),
    (b"\x89PNG\r\n\x1a\n", FileType.PNG),
    (b"\xff\xd8\xff", FileType.JPEG),
)
_TRAILER_WINDOW = 1024


def _complete(content: bytes, kind: FileType) -> bool:
    tail = content[-_TRAILER_WINDOW:]
    if kind == FileType.PDF:
        return b"%%EOF" in tail
    if kind == FileType.PNG:
        return content.endswith(b"IEND\xaeB`\x82")
    return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def file_type_of(content: bytes) -> FileType:
    """The accepted type `content` is, or a 400 naming what is accepted."""
    for magic, kind in _SIGNATURES:
        if content.startswith(magic):
            if not _complete(content, kind):
                raise InvalidRequest(f"The file starts like a {kind.label} but is not complete "
                                     "(truncated upload?); send the whole file.",
                                     param="file", code="file_invalid")
            return kind
    raise InvalidRequest("Evidence files must be PDF, PNG or JPEG (judged by the file's "
                         "content, not its name).", param="file", code="file_type_not_allowed")


def read_limited(chunks: Iterable[bytes], *, limit: int | None = None) -> bytes:
    """Join an upload's chunks, refusing (413) as soon as it passes the size limit."""
    limit = settings.EVIDENCE_MAX_BYTES if limit is None else limit
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Evidence files are limited to {limit} bytes.",
                                  param="file", code="file_too_large")
        parts.append(chunk)
    content = b"".join(parts)
    if not content:
        raise InvalidRequest("The file is empty.", param="file", code="file_invalid")
    return content


def clean_filename(name: str) -> str:
    """A display name only: no folders, no control characters, at most 255 characters."""
    base = os.path.basename(name.replace("\\", "/"))
    printable = "".join(ch for ch in base if ch.isprintable() and ch not in "\"'<>")
    return (printable.strip() or "evidence")[:255]


def _root() -> Path:
    """The evidence folder, refused (fail closed) when unset or inside a served folder: gunicorn
    runs no system checks, so payments.E002 alone would not stop a misconfigured deploy."""
    folder = settings.EVIDENCE_STORAGE_DIR
    if not folder:
        raise RuntimeError("EVIDENCE_STORAGE_DIR is not set; evidence files cannot be stored.")
    served = served_overlaps(folder)
    if served:
        raise RuntimeError(f"EVIDENCE_STORAGE_DIR ({folder}) overlaps a served folder "
                           f"({', '.join(served)}); evidence files are neither kept nor read.")
    return Path(folder)


def _write_whole(path: Path, token: bytes) -> None:
    """Write through a `.partial` beside it and rename: a reader sees the old file or the new,
    never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(token)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def store(merchant_id: str, content: bytes) -> str:
    """Write `content` encrypted under a new random name; returns that name (relative)."""
    name = f"{merchant_id}/{secrets.token_hex(16)}"
    _write_whole(_root() / name, crypto.encrypt_bytes(content))
    return name


def reencrypt_stored(storage_names: Iterable[str]) -> int:
    """Key rotation: each stored file rewritten under the newest key (a file already under it
    is rewritten too; the content never changes). Returns how many were rewritten."""
    done = 0
    for name in storage_names:
        path = _root() / name
        _write_whole(path, crypto.reencrypt_bytes(path.read_bytes()))
        done += 1
    return done


def load(storage_name: str) -> bytes:
    return crypto.decrypt_bytes((_root() / storage_name).read_bytes())


def attachment_response(content: bytes, *, filename: str, content_type: str) -> HttpResponse:
    """A download that no browser renders or runs: attachment, nosniff, and a sandboxing CSP
    in case anything opens it anyway. Used by the API and the back-office alike."""
    response = HttpResponse(content, content_type=content_type)
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    response["Content-Disposition"] = (f'attachment; filename="{ascii_name}"; '
                                       f"filename*=UTF-8''{quote(filename)}")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


def discard(storage_name: str) -> None:
    """Remove a stored file whose row was never committed."""
    (_root() / storage_name).unlink(missing_ok=True)
