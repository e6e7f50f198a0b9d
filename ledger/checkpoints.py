"""Signed checkpoints of every account's chain head: made on a schedule (beat) and on demand
(`manage.py ledger_checkpoint`), exported outside the database, and checked by `ledger_verify`.

The private key (LEDGER_CHECKPOINT_SIGNING_KEY, an Ed25519 seed in hex) lives only in the
environment; verifying needs only the public key. Each checkpoint goes to three places: the
database (for `GET /api/v1/ledger/checkpoint`), a file in LEDGER_CHECKPOINT_DIR (mount it from
storage the database role cannot write: an object store, a WORM volume), and the log. The file
is the one `ledger_verify` trusts first, because a database owner can delete database rows but
not files elsewhere or a signature they do not have the key for.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from ledger.chain import (
    GENESIS_HASH,
    AccountHead,
    account_label,
    body_digest,
    canonical,
    checkpoint_body,
    key_id,
    leaf_hash,
    merkle_proof,
    merkle_root,
    verify_signature,
)
from ledger.models import Checkpoint

logger = logging.getLogger(__name__)
# pg_advisory_lock key ("ledger" in ASCII, then 2): one checkpoint at a time. Database-wide.
CHECKPOINT_LOCK_KEY = 0x6C65_6467_6572_0002
_FILE_PREFIX = "checkpoint-"

_HEADS_SQL = """
    SELECT id, COALESCE(merchant_id, ''), currency, kind, provider, shard, version, head_hash,
           balance
      FROM ledger_account ORDER BY id"""
# The same label as ledger.chain.account_label, in SQL (the checkpoint tests pin the two).
_LABEL_SQL = ("CASE WHEN a.provider = '' THEN a.kind ELSE a.kind || ':' || a.provider END"
              " || CASE WHEN a.shard = 0 THEN '' ELSE '#' || a.shard END")


def _private_key() -> Ed25519PrivateKey:
    seed = str(getattr(settings, "LEDGER_CHECKPOINT_SIGNING_KEY", "") or "")
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    except ValueError as exc:
        raise ImproperlyConfigured(
            "LEDGER_CHECKPOINT_SIGNING_KEY is missing or is not a 32-byte Ed25519 seed in hex "
            "(64 hex characters). Generate one with: python -c \"import os; "
            "print(os.urandom(32).hex())\"") from exc


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def public_key_hex() -> str:
    """The current signing key's public half: what auditors and merchants verify with."""
    return _raw_public(_private_key()).hex()


def public_keys() -> dict[str, str]:
    """{key_id: public key hex}: the current key and LEDGER_CHECKPOINT_PUBLIC_KEYS (old keys
    kept so checkpoints signed before a rotation still verify)."""
    keys = [str(k) for k in getattr(settings, "LEDGER_CHECKPOINT_PUBLIC_KEYS", []) or []]
    with contextlib.suppress(ImproperlyConfigured):  # no signing key: old keys only
        keys.insert(0, public_key_hex())
    return {key_id(bytes.fromhex(k)): k for k in keys}


def export_dir() -> Path | None:
    """Where checkpoint files go, one folder per database, or None when not configured."""
    base = getattr(settings, "LEDGER_CHECKPOINT_DIR", None)
    if not base:
        return None
    return Path(base) / str(connection.settings_dict["NAME"])


@dataclass(frozen=True)
class Document:
    """A checkpoint as exported: the signed body, its signature and every account head."""

    body: dict[str, Any]
    signature: str
    heads: list[list[Any]]
    source: str  # "file <path>" or "database"

    @property
    def number(self) -> int:
        return int(self.body["number"])

    def as_json(self) -> dict[str, Any]:
        return {"body": self.body, "signature": self.signature, "heads": self.heads,
                "public_key": public_keys().get(self.body.get("key_id", ""), "")}


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{_FILE_PREFIX}*.json")) if folder.is_dir() else []


def _file_number(path: Path) -> int:
    digits = path.stem.removeprefix(_FILE_PREFIX)
    return int(digits) if digits.isdigit() else -1


def _read_file(path: Path) -> Document:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Document(data["body"], data["signature"], data["heads"], f"file {path}")


def latest_exported() -> Document | None:
    folder = export_dir()
    files = _files(folder) if folder else []
    return _read_file(files[-1]) if files else None


def latest_stored() -> Document | None:
    row = Checkpoint.objects.order_by("-number").first()
    return None if row is None else Document(row.body, row.signature, row.heads, "database")


def _write_file(folder: Path, document: Document) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_FILE_PREFIX}{document.number:010d}.json"
    if path.exists():
        raise FileExistsError(f"{path} already exists; a checkpoint file is never overwritten")
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document.as_json(), indent=1, sort_keys=True),
                         encoding="utf-8")
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def checkpoint_create() -> Checkpoint:
    """Sign where every account's chain stands now, store it and export it.

    One at a time (a session advisory lock), then one REPEATABLE READ snapshot, so the heads
    are a consistent cut even while entries are being posted.
    """
    key = _private_key()
    outermost = not connection.in_atomic_block  # inside a caller's (a test's), use it as it is
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [CHECKPOINT_LOCK_KEY])
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                if outermost:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute(_HEADS_SQL)
                heads = [AccountHead(pk, owner, currency, account_label(kind, provider, shard),
                                     version, head, balance)
                         for pk, owner, currency, kind, provider, shard, version, head, balance
                         in cursor.fetchall()]
            previous = max((d for d in (latest_exported(), latest_stored()) if d is not None),
                           key=lambda d: d.number, default=None)
            number = previous.number + 1 if previous else 1
            now = timezone.now()
            body = checkpoint_body(
                number=number, created_at=now,
                previous=body_digest(previous.body) if previous else GENESIS_HASH,
                heads=heads, key_id=key_id(_raw_public(key)))
            signature = base64.b64encode(key.sign(canonical(body))).decode()
            document = Document(body, signature, [h.as_list() for h in heads], "database")
            row = Checkpoint.objects.create(number=number, created_at=now, body=body,
                                            signature=signature, heads=document.heads)
            folder = export_dir()
            where = str(_write_file(folder, document)) if folder else "not exported to a file"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [CHECKPOINT_LOCK_KEY])
    # The log is a third copy, outside the database: the body and signature are enough to
    # check a later file or database copy against.
    logger.info("ledger checkpoint %s signed: %s", number,
                json.dumps({"body": body, "signature": signature, "file": where},
                           sort_keys=True))
    return row


# -- checking the database against the latest checkpoint -------------------------------------
_COVERED_SQL = f"""
    SELECT h.account_id, h.version, h.head, a.id IS NOT NULL, a.version, p.hash,
           p.balance_after, h.balance, COALESCE(a.merchant_id, '') || ' ' || a.currency || ' '
           || {_LABEL_SQL}, h.owner || ' ' || h.currency || ' ' || h.label
      FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
                  %s::bigint[]) AS h(account_id, version, head, owner, currency, label, balance)
      LEFT JOIN ledger_account a ON a.id = h.account_id
      LEFT JOIN ledger_posting p ON p.account_id = h.account_id AND p.account_version = h.version
     WHERE a.id IS NULL OR a.version < h.version
        OR (h.version > 0 AND (p.hash IS DISTINCT FROM h.head
                               OR p.balance_after IS DISTINCT FROM h.balance))
        OR COALESCE(a.merchant_id, '') <> h.owner OR a.currency <> h.currency
        OR {_LABEL_SQL} <> h.label
     ORDER BY h.account_id LIMIT 1"""  # noqa: S608 (constants only)


def _document_problems(document: Document) -> list[str]:
    keys = public_keys()
    public = keys.get(str(document.body.get("key_id", "")))
    if public is None:
        return [f"checkpoint {document.number} ({document.source}) is signed with key "
                f"{document.body.get('key_id')!r}, which is neither LEDGER_CHECKPOINT_SIGNING_KEY "
                "nor in LEDGER_CHECKPOINT_PUBLIC_KEYS"]
    if not verify_signature(document.body, document.signature, public):
        return [f"checkpoint {document.number} ({document.source}): the signature does not "
                "verify: the checkpoint was forged or altered"]
    heads = [AccountHead.from_list(row) for row in document.heads]
    if merkle_root([leaf_hash(h) for h in heads]) != document.body["root"]:
        return [f"checkpoint {document.number} ({document.source}): its account heads do not "
                "hash to the signed root"]
    return []


def _coverage_problems(document: Document) -> list[str]:
    """Every account head the checkpoint signed is still there: same owner, currency and type,
    a posting of that version with that hash and balance, and no fewer postings."""
    heads = [AccountHead.from_list(row) for row in document.heads]
    columns = [[h.account_id for h in heads], [h.version for h in heads],
               [h.head_hash for h in heads], [h.merchant_id for h in heads],
               [h.currency for h in heads], [h.code for h in heads], [h.balance for h in heads]]
    with connection.cursor() as cursor:
        cursor.execute(_COVERED_SQL, columns)
        row = cursor.fetchone()
    if row is None:
        return []
    account_id, version, head, exists, current_version, stored_hash, stored_balance, \
        signed_balance, identity, signed_identity = row
    if not exists:
        found = "the account is gone"
    elif identity != signed_identity:
        found = f"the account is now '{identity}', signed as '{signed_identity}' (relabelled)"
    elif current_version < version:
        found = f"the account is back at version {current_version} (truncated)"
    elif version and stored_hash is None:
        found = f"there is no posting with version {version} (deleted)"
    elif version and stored_hash != head:
        found = f"that posting's hash is {stored_hash[:12]}… (rewritten)"
    else:
        found = (f"that posting's balance_after is {stored_balance}, signed {signed_balance} "
                 "(rewritten)")
    return [f"checkpoint {document.number} ({document.source}) signed account {account_id} at "
            f"version {version}, head {head[:12]}…, but {found}: entries it covered were "
            "deleted or rewritten"]


def checkpoint_problems() -> tuple[Document | None, list[str], list[str]]:
    """(the newest checkpoint checked, problems, notes). Run inside `ledger_verify`'s snapshot,
    which holds the checkpoint lock shared so no checkpoint commits halfway through.

    The newest exported file and the newest database row are both judged (each must verify and
    still cover the rows it signed); the database copy must equal its file, the file must hold
    the checkpoint its name says and link to the file before it, and a database checkpoint newer
    than every file (with files being exported) means a file was deleted. A file whose database
    row is missing is not a problem: the process stopped before COMMIT (the file is written
    first), and the file still judges the rows.
    """
    folder = export_dir()
    files = _files(folder) if folder else []
    stored = latest_stored()
    exported = _read_file(files[-1]) if files else None
    problems: list[str] = []
    notes: list[str] = []
    documents = [exported] if exported else []
    if exported is not None:
        if _file_number(files[-1]) != exported.number:
            problems.append(f"{files[-1].name} holds checkpoint {exported.number}: an older "
                            "checkpoint was copied under a newer name")
        twin = Checkpoint.objects.filter(number=exported.number).first()
        if twin is None:
            notes.append(f"checkpoint {exported.number} is exported but not in the database "
                         "(the process stopped before COMMIT, or the row was deleted); its file "
                         "still judges the rows")
        elif (twin.body, twin.signature, twin.heads) != (
                exported.body, exported.signature, exported.heads):
            problems.append(f"the database copy of checkpoint {exported.number} differs from "
                            f"its exported file: merchants would be served altered proofs")
        earlier = folder / f"{_FILE_PREFIX}{exported.number - 1:010d}.json"  # type: ignore[operator]
        if earlier.exists() and exported.body["previous"] != body_digest(_read_file(earlier).body):
            problems.append(f"checkpoint {exported.number} does not link to checkpoint "
                            f"{exported.number - 1}: a checkpoint file was replaced")
    if stored is not None and (exported is None or stored.number > exported.number):
        if exported is not None:
            problems.append(f"checkpoint {stored.number} is in the database but the newest "
                            f"exported file is checkpoint {exported.number}: a file was deleted "
                            f"from {folder}")
        documents.append(stored)
    for document in documents:
        problems += _document_problems(document) or _coverage_problems(document)
    newest = max(documents, key=lambda d: d.number, default=None)
    return newest, problems, notes


@functools.lru_cache(maxsize=2)
def _leaves(signature: str, row: Checkpoint) -> tuple[list[AccountHead], list[bytes]]:
    """A checkpoint's heads and leaf hashes, hashed once per process (checkpoints never change;
    the signature, unique to its body, is the cache key; `row` rides along)."""
    heads = [AccountHead.from_list(item) for item in row.heads]
    return heads, [leaf_hash(h) for h in heads]


def merchant_proof(*, merchant_id: str) -> dict[str, Any] | None:
    """The latest checkpoint with an inclusion proof for each of one merchant's accounts."""
    row = Checkpoint.objects.order_by("-number").first()
    if row is None:
        return None
    heads, leaves = _leaves(row.signature, row)
    accounts = [{"leaf": head.as_list(), "index": index, "proof": merkle_proof(leaves, index)}
                for index, head in enumerate(heads) if head.merchant_id == merchant_id]
    return {"object": "ledger_checkpoint", "number": row.number, "body": row.body,
            "signature": row.signature,
            "public_key": public_keys().get(row.body.get("key_id", ""), ""),
            "accounts": accounts}
