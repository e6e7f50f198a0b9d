"""Shared by the ledger's tests: a small set of books, edits made behind the triggers' back as a
table owner could, so each attack reads as its intent."""

from __future__ import annotations

from collections import defaultdict

import pytest
from django.db import connection

from ledger import flows
from ledger.chain import GENESIS_HASH, EntryLine, account_label, entry_digest, micros, posting_hash
from ledger.models import JournalEntry


@pytest.fixture(name="export")
def export_fixture(settings, tmp_path):
    """Checkpoints exported to a fresh folder; the path of this database's files in it."""
    settings.LEDGER_CHECKPOINT_DIR = str(tmp_path / "checkpoints")
    return tmp_path / "checkpoints" / str(connection.settings_dict["NAME"])


def post_books(merchant, *, fee: int = 320, refund_succeeds: bool = True, dispute: bool = True,
               payout: bool = True) -> None:
    """A merchant's real movements in usd: capture pay_1 10,000, its settlement less `fee`, a
    1,000 refund (succeeded unless told not), a 500 dispute, a 2,000 deposit, a 3,000 payout."""
    common = {"merchant": merchant, "currency": "usd"}
    flows.post_capture(payment_id="pay_1", provider="sandbox", amount=10_000, **common)
    flows.post_settlement(payment_id="pay_1", amount=10_000, fee=fee, **common)
    flows.post_refund_created(refund_id="re_1", payment_id="pay_1", amount=1_000, **common)
    if refund_succeeds:
        flows.post_refund_succeeded(refund_id="re_1", payment_id="pay_1", provider="sandbox",
                                    amount=1_000, **common)
    if dispute:
        flows.post_dispute_opened(dispute_id="dp_1", payment_id="pay_1", amount=500, **common)
    flows.post_deposit_confirmed(deposit_id="dep_1", amount=2_000, **common)
    if payout:
        flows.post_payout_created(payout_id="po_1", amount=3_000, **common)


def flush_deferred() -> None:
    """Fire the deferred COMMIT-time checks now, so they judge the books as posted and not the
    tampering that follows when the test transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def as_table_owner(*statements: tuple[str, list]) -> None:
    """Edit with triggers off (session_replication_role = replica), as a table owner could."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            for sql, params in statements:
                cursor.execute(sql, params)
        finally:
            cursor.execute("SET session_replication_role = origin")


def delete_with_its_effect(entry: JournalEntry) -> JournalEntry:
    """Remove the newest entry and undo it on every account: balances, versions and heads rewound,
    so every chain, sum and balance_after is consistent again."""
    statements = [("UPDATE ledger_account SET balance = balance - %s, version = version - 1, "
                   "head_hash = %s WHERE id = %s", [p.amount, p.prev_hash, p.account_id])
                  for p in entry.postings.all()]
    statements += [("DELETE FROM ledger_posting WHERE entry_id = %s", [entry.id]),
                   ("DELETE FROM ledger_journalentry WHERE id = %s", [entry.id])]
    as_table_owner(*statements)
    return entry


def rechain_everything() -> None:
    """The strongest table owner: after editing rows, recompute every entry digest, every
    account chain (in created_at order), every balance_after and every account's balance,
    version and head, so that every internal check passes again."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute("SELECT id, kind, reference_type, reference_id, merchant_id, "
                           "description, created_at FROM ledger_journalentry")
            entries = {row[0]: row for row in cursor.fetchall()}
            cursor.execute("SELECT id, COALESCE(merchant_id, ''), kind, provider, shard "
                           "FROM ledger_account")
            identity = {row[0]: (row[1], account_label(*row[2:])) for row in cursor.fetchall()}
            cursor.execute("SELECT id, entry_id, account_id, amount, currency, created_at "
                           "FROM ledger_posting ORDER BY account_id, created_at, account_version")
            postings = cursor.fetchall()
            lines: dict[str, list[EntryLine]] = defaultdict(list)
            for pid, eid, account_id, amount, currency, _ in postings:
                lines[eid].append(EntryLine(pid, account_id, amount, currency))
            digests = {}
            for eid, (_, kind, ref_type, ref_id, merchant_id, description, created_at) in \
                    entries.items():
                digests[eid] = entry_digest(
                    entry_id=eid, kind=kind, reference_type=ref_type, reference_id=ref_id,
                    merchant_id=merchant_id, description=description, created_at=created_at,
                    lines=lines[eid])
                cursor.execute("UPDATE ledger_journalentry SET hash = %s WHERE id = %s",
                               [digests[eid], eid])
            cursor.execute("UPDATE ledger_posting "
                           "SET account_version = account_version + 1000000")
            heads: dict[int, tuple[int, int, str]] = {}
            for pid, eid, account_id, amount, currency, created_at in postings:
                version, balance, prev = heads.get(account_id, (0, 0, GENESIS_HASH))
                version, balance = version + 1, balance + amount
                link = posting_hash(prev_hash=prev, account_id=account_id,
                                    owner=identity[account_id][0],
                                    label=identity[account_id][1], account_version=version,
                                    posting_id=pid, entry_id=eid,
                                    entry_hash=digests[eid], amount=amount, currency=currency,
                                    balance_after=balance, created_at_us=micros(created_at))
                cursor.execute("UPDATE ledger_posting SET account_version = %s, balance_after = "
                               "%s, prev_hash = %s, hash = %s WHERE id = %s",
                               [version, balance, prev, link, pid])
                heads[account_id] = (version, balance, link)
            cursor.execute("UPDATE ledger_account SET version = 0, balance = 0, head_hash = %s",
                           [GENESIS_HASH])
            for account_id, (version, balance, head) in heads.items():
                cursor.execute("UPDATE ledger_account SET version = %s, balance = %s, "
                               "head_hash = %s WHERE id = %s", [version, balance, head, account_id])
        finally:
            cursor.execute("SET session_replication_role = origin")
