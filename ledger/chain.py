"""The hash chain: one canonical byte form of an entry and its postings, and its SHA-256.

`entry_post` computes the hash when it writes an entry and `ledger_verify` recomputes it from the
stored rows, so both must call `entry_hash` with the same values; anything not hashed here
(e.g. account balances) is covered by the verify checks instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

GENESIS_HASH = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class HashedPosting:
    id: str
    account_id: int
    amount: int
    currency: str
    balance_after: int


def _micros(moment: datetime) -> int:
    # Integer microseconds: isoformat() would depend on the datetime's tzinfo object.
    return (moment - _EPOCH) // timedelta(microseconds=1)


def entry_hash(
    *, prev_hash: str, sequence: int, entry_id: str, kind: str, reference_type: str,
    reference_id: str, merchant_id: str | None, description: str, created_at: datetime,
    postings: list[HashedPosting],
) -> str:
    content = {
        "sequence": sequence,
        "id": entry_id,
        "kind": kind,
        "reference_type": reference_type,
        "reference_id": reference_id,
        "merchant": merchant_id or "",
        "description": description,
        "created_at": _micros(created_at),
        "postings": [
            [p.id, p.account_id, p.amount, p.currency, p.balance_after]
            for p in sorted(postings, key=lambda p: p.account_id)
        ],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()
