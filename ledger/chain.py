"""The ledger's tamper evidence, as pure functions: per-account hash chains, signed checkpoints of
their heads, Merkle proofs, and an offline verifier (`python chain.py …`).

Standard library + `cryptography` only, no Django: `entry_post` and `ledger_verify` call these,
and an auditor or a merchant copies this one file to check a checkpoint without our code or
database. Everything hashed is canonical JSON (sorted keys, no spaces, ASCII), so any language
can recompute it.

- `entry_digest`: what one journal entry says (kind, reference, merchant, description, time and
  every posting's id, account, amount and currency). Not chained: entries commit in parallel.
- `posting_hash`: each posting links to the previous posting *of its account*
  (`prev_hash`, `account_version`), and names its entry's digest, so rewriting an entry breaks
  every account chain it touched. The account row holds the head (`head_hash`, `version`).
- A checkpoint signs (Ed25519) the Merkle root of every account's (version, head, balance), with
  the previous checkpoint's digest. Exported outside the database, it catches what a table
  owner can do unseen inside it: truncating the newest entries, or rewriting them and
  recomputing every hash after.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

GENESIS_HASH = "0" * 64
CHECKPOINT_FORMAT = "clearhouse-ledger-checkpoint/1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def micros(moment: datetime) -> int:
    """Integer microseconds since the epoch: isoformat() would depend on the tzinfo object."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


# -- entries and postings --------------------------------------------------------------------
@dataclass(frozen=True)
class EntryLine:
    posting_id: str
    account_id: int
    amount: int
    currency: str


def entry_digest(
    *, entry_id: str, kind: str, reference_type: str, reference_id: str,
    merchant_id: str | None, description: str, created_at: datetime, lines: Iterable[EntryLine],
) -> str:
    content = {
        "id": entry_id, "kind": kind, "reference_type": reference_type,
        "reference_id": reference_id, "merchant": merchant_id or "",
        "description": description, "created_at": micros(created_at),
        "lines": [[line.posting_id, line.account_id, line.amount, line.currency]
                  for line in sorted(lines, key=lambda line: line.account_id)],
    }
    return _sha256(b"entry\n", canonical(content))


def account_label(kind: str, provider: str = "", shard: int = 0) -> str:
    """`available`, `provider_clearing:sandbox`, `provider_clearing:sandbox#3` (a shard)."""
    code = f"{kind}:{provider}" if provider else kind
    return f"{code}#{shard}" if shard else code


def posting_hash(
    *, prev_hash: str, account_id: int, owner: str, label: str, account_version: int,
    posting_id: str, entry_id: str, entry_hash: str, amount: int, currency: str,
    balance_after: int, created_at_us: int,
) -> str:
    """`owner` (merchant id, "" for the platform) and `label` (`account_label`) name whose
    balance of which type moved, so re-labelling an account (pending ↔ available, another
    merchant, another provider) breaks its chain."""
    content = {
        "account": account_id, "owner": owner, "label": label, "version": account_version,
        "id": posting_id, "entry": entry_id, "entry_hash": entry_hash, "amount": amount,
        "currency": currency, "balance_after": balance_after, "created_at": created_at_us,
    }
    return _sha256(prev_hash.encode(), b"\n", canonical(content))


# -- checkpoints: Merkle tree over account heads (RFC 6962 shape) ------------------------------
@dataclass(frozen=True)
class AccountHead:
    """One leaf of a checkpoint: where one account's chain stood."""

    account_id: int
    merchant_id: str  # "" for platform accounts
    currency: str
    code: str  # "available", "provider_clearing:sandbox#3", …
    version: int
    head_hash: str
    balance: int

    def as_list(self) -> list[Any]:
        return [self.account_id, self.merchant_id, self.currency, self.code, self.version,
                self.head_hash, self.balance]

    @classmethod
    def from_list(cls, row: Sequence[Any]) -> AccountHead:
        account_id, merchant_id, currency, code, version, head_hash, balance = row
        return cls(int(account_id), str(merchant_id), str(currency), str(code), int(version),
                   str(head_hash), int(balance))


def leaf_hash(head: AccountHead) -> bytes:
    return hashlib.sha256(b"\x00" + canonical(head.as_list())).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (RFC 6962 §2.1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def merkle_root(leaves: Sequence[bytes]) -> str:
    def root(nodes: Sequence[bytes]) -> bytes:
        if len(nodes) == 1:
            return nodes[0]
        k = _split(len(nodes))
        return _node(root(nodes[:k]), root(nodes[k:]))

    return root(leaves).hex() if leaves else hashlib.sha256(b"").hexdigest()


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[str]:
    """The sibling hashes from leaf `index` up to the root, leaf side first."""
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*merkle_proof(leaves[:k], index), merkle_root(leaves[k:])]
    return [*merkle_proof(leaves[k:], index - k), merkle_root(leaves[:k])]


def root_from_proof(leaf: bytes, index: int, size: int, proof: Sequence[str]) -> str:
    """Recompute the root from one leaf and its proof (RFC 6962 §2.1.1, recursively)."""
    siblings = [bytes.fromhex(h) for h in proof]

    def climb(i: int, n: int) -> bytes:
        if n == 1:
            return leaf
        k = _split(n)
        if not siblings:
            raise ValueError("the proof is too short for the tree size")
        if i < k:
            inner = climb(i, k)
            return _node(inner, siblings.pop(0))
        inner = climb(i - k, n - k)
        return _node(siblings.pop(0), inner)

    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    root = climb(index, size)
    if siblings:
        raise ValueError("the proof is longer than the tree needs")
    return root.hex()


def checkpoint_body(
    *, number: int, created_at: datetime, previous: str, heads: Sequence[AccountHead],
    key_id: str,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT, "number": number,
        "created_at": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "previous": previous, "accounts": len(heads),
        "root": merkle_root([leaf_hash(head) for head in heads]), "key_id": key_id,
    }


def body_digest(body: dict[str, Any]) -> str:
    """What the next checkpoint names as `previous`."""
    return _sha256(b"checkpoint\n", canonical(body))


def key_id(public_key_raw: bytes) -> str:
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def verify_signature(body: dict[str, Any], signature_b64: str, public_key_hex: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = bytes.fromhex(public_key_hex)
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(signature_b64),
                                                       canonical(body))
    except (InvalidSignature, ValueError):
        return False
    return body.get("key_id") == key_id(raw)


# -- the offline verifier --------------------------------------------------------------------
def check_checkpoint(document: dict[str, Any], public_key_hex: str) -> list[str]:
    """Problems with an exported checkpoint file ({body, signature, heads}); [] when genuine."""
    body, signature = document.get("body"), document.get("signature", "")
    if not isinstance(body, dict) or body.get("format") != CHECKPOINT_FORMAT:
        return [f"not a {CHECKPOINT_FORMAT} document"]
    if not verify_signature(body, signature, public_key_hex):
        return ["the signature does not verify with this public key: forged or altered"]
    problems = []
    if "heads" in document:
        heads = [AccountHead.from_list(row) for row in document["heads"]]
        if merkle_root([leaf_hash(h) for h in heads]) != body["root"]:
            problems.append("the account heads do not hash to the signed root")
        if len(heads) != body["accounts"]:
            problems.append("the number of account heads differs from the signed body")
    return problems


def check_merchant_coverage(
    proof: dict[str, Any], balance_transactions: Sequence[dict[str, Any]], public_key_hex: str,
) -> list[str]:
    """Problems proving a merchant's balance transactions are covered by a checkpoint.

    `proof` is `GET /api/v1/ledger/checkpoint` (body, signature, one inclusion proof per
    account); `balance_transactions` is every page of `GET /api/v1/balance_transactions`.
    For each account: its transactions up to the checkpoint's version rebuild the chain to the
    signed head and balance, and the head is in the signed tree.
    """
    body = proof.get("body") or {}
    if not verify_signature(body, proof.get("signature", ""), public_key_hex):
        return ["the checkpoint's signature does not verify with this public key"]
    problems: list[str] = []
    by_account: dict[int, list[dict[str, Any]]] = {}
    for bt in balance_transactions:
        by_account.setdefault(int(bt["chain"]["account"]), []).append(bt)
    proven = {int(item["leaf"][0]) for item in proof.get("accounts", [])}
    for account_id in sorted(set(by_account) - proven):
        problems.append(f"account {account_id}: its balance transactions are not covered (the "
                        "checkpoint proof has no leaf for it)")
    for item in proof.get("accounts", []):
        problems += _account_coverage(item, body, by_account)
    return problems


def _account_coverage(item: dict[str, Any], body: dict[str, Any],
                      by_account: dict[int, list[dict[str, Any]]]) -> list[str]:
    head = AccountHead.from_list(item["leaf"])
    name = f"account {head.account_id} ({head.code} {head.currency})"
    try:
        root = root_from_proof(leaf_hash(head), item["index"], body["accounts"], item["proof"])
    except ValueError as exc:
        return [f"{name}: {exc}"]
    if root != body["root"]:
        return [f"{name}: not in the signed tree (the proof gives another root)"]
    rows = by_account.get(head.account_id, [])
    for bt in rows:
        if bt.get("balance_type") != head.code or bt.get("currency") != head.currency:
            return [f"{name}: balance transaction {bt['id']} says {bt.get('balance_type')} "
                    f"{bt.get('currency')}, the signed account is {head.code} {head.currency}"]
    covered = sorted((bt for bt in rows if bt["chain"]["version"] <= head.version),
                     key=lambda bt: bt["chain"]["version"])
    if [bt["chain"]["version"] for bt in covered] != list(range(1, head.version + 1)):
        return [f"{name}: the checkpoint covers versions 1–{head.version} but the balance "
                f"transactions given have {len(covered)} of them"]
    current, balance = GENESIS_HASH, 0
    for bt in covered:
        chain = bt["chain"]
        balance += int(bt["amount"])
        recomputed = posting_hash(
            prev_hash=current, account_id=head.account_id, owner=head.merchant_id,
            label=head.code, account_version=chain["version"], posting_id=bt["id"],
            entry_id=bt["entry"], entry_hash=chain["entry_hash"], amount=int(bt["amount"]),
            currency=bt["currency"], balance_after=int(bt["balance_after"]),
            created_at_us=int(chain["created_at_us"]))
        if recomputed != chain["hash"] or balance != int(bt["balance_after"]):
            return [f"{name}: balance transaction {bt['id']} does not match its hash or "
                    "running balance"]
        current = recomputed
    if current != head.head_hash or balance != head.balance:
        return [f"{name}: the chain ends at {current[:12]}… (balance {balance}), the "
                f"checkpoint says {head.head_hash[:12]}… ({head.balance})"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check a Clearhouse ledger checkpoint offline (stdlib + cryptography).")
    parser.add_argument("checkpoint", help="a checkpoint file, or the JSON of "
                                           "GET /api/v1/ledger/checkpoint")
    parser.add_argument("--public-key", required=True, help="the Ed25519 public key, hex")
    parser.add_argument("--balance-transactions", help="JSON list of your balance "
                        "transactions: check that the checkpoint covers them")
    args = parser.parse_args(argv)
    with open(args.checkpoint, encoding="utf-8") as handle:
        document = json.load(handle)
    if args.balance_transactions:
        with open(args.balance_transactions, encoding="utf-8") as handle:
            rows = json.load(handle)
        rows = rows.get("data", rows) if isinstance(rows, dict) else rows
        problems = check_merchant_coverage(document, rows, args.public_key)
    else:
        problems = check_checkpoint(document, args.public_key)
    body = document.get("body") or {}
    if problems:
        print(f"checkpoint {body.get('number')}: FAILED")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"checkpoint {body.get('number')} of {body.get('created_at')}: OK "
          f"({body.get('accounts')} accounts, root "
          f"{str(body.get('root'))[:16]}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
