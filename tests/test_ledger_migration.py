"""Migration 0003 on a database that already holds ledger rows written under 0002 (one global
chain, entries with prev_hash): every posting is re-chained per account in the old order and
`ledger_verify` is clean; posting and checkpointing carry on from the re-chained heads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import import_module

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from ledger import flows
from ledger.checkpoints import checkpoint_create
from ledger.models import Account, JournalEntry, Posting
from ledger.services import entry_post
from ledger.verify import ledger_verify
from tests.factories import MerchantFactory

BEFORE = [("ledger", "0002_ledger_triggers")]


def migrate(targets) -> None:  # type: ignore[no-untyped-def]
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def restore_0002_triggers() -> None:
    """0003's reverse leaves its own trigger functions in place (a separate finding); put back
    exactly what a database that never saw 0003 has."""
    old = import_module("ledger.migrations.0002_ledger_triggers")
    with connection.cursor() as cursor:
        cursor.execute(old.REVERSE)
        cursor.execute(old.SQL)


def write_0002_rows(m1, m2) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Rows as 0002's code wrote them, through 0002's own triggers (global chain checked,
    balances and versions maintained by the posting trigger, zero-sum at COMMIT)."""
    accounts = {"clearing": (None, "provider_clearing", "sandbox"), "fees": (None, "fees", ""),
                "p1": (m1.pk, "pending", ""), "a1": (m1.pk, "available", ""),
                "p2": (m2.pk, "pending", "")}
    entries = [  # (kind, reference, merchant, {account: amount})
        ("capture", "pay_1", m1, {"clearing": -10_000, "p1": 10_000}),
        ("capture", "pay_2", m2, {"clearing": -5_000, "p2": 5_000}),
        ("settlement", "pay_1", m1, {"p1": -10_000, "a1": 9_700, "fees": 300}),
        ("capture", "pay_3", m1, {"clearing": -3_000, "p1": 3_000}),
        ("capture", "pay_4", m2, {"clearing": -1_000, "p2": 1_000}),
    ]
    ids: dict[str, int] = {}
    balances = dict.fromkeys(accounts, 0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction.atomic(), connection.cursor() as cursor:
        for name, (merchant_id, kind, provider) in accounts.items():
            cursor.execute("INSERT INTO ledger_account (merchant_id, currency, kind, provider, "
                           "balance, version, created_at) VALUES (%s, 'usd', %s, %s, 0, 0, %s) "
                           "RETURNING id", [merchant_id, kind, provider, start])
            ids[name] = cursor.fetchone()[0]
        prev = "0" * 64
        for n, (kind, reference, merchant, lines) in enumerate(entries, start=1):
            when = start + timedelta(minutes=n)
            digest = f"{n:064x}"
            cursor.execute("INSERT INTO ledger_journalentry (id, sequence, kind, description, "
                           "reference_type, reference_id, merchant_id, created_at, prev_hash, "
                           "hash) VALUES (%s, %s, %s, '', 'payment', %s, %s, %s, %s, %s)",
                           [f"txn_old{n}", n, kind, reference, merchant.pk, when, prev, digest])
            prev = digest
            for name, amount in lines.items():
                balances[name] += amount
                cursor.execute("INSERT INTO ledger_posting (id, entry_id, account_id, "
                               "merchant_id, amount, currency, balance_after, created_at) "
                               "VALUES (%s, %s, %s, %s, %s, 'usd', %s, %s)",
                               [f"bt_old{n}{name}", f"txn_old{n}", ids[name],
                                accounts[name][0], amount, balances[name], when])
    return ids


@pytest.mark.django_db(transaction=True)
def test_0002_rows_are_rechained_per_account_and_verify_clean_after_0003():
    m1, m2 = MerchantFactory(), MerchantFactory()
    forward = latest()
    migrate(BEFORE)
    try:
        restore_0002_triggers()
        ids = write_0002_rows(m1, m2)
    finally:
        migrate(forward)

    result = ledger_verify()
    assert result.ok, result.report()
    assert (result.entries, result.postings) == (5, 11)
    clearing = Account.objects.get(pk=ids["clearing"])
    assert (clearing.version, clearing.balance, clearing.shard) == (4, -19_000, 0)
    chain = list(Posting.objects.filter(account_id=ids["p1"]).order_by("account_version")
                 .values_list("entry_id", "account_version", "balance_after"))
    assert chain == [("txn_old1", 1, 10_000), ("txn_old3", 2, 0), ("txn_old4", 3, 3_000)]

    # The triggers accept links from the re-chained heads; the sequence carries on.
    entry_post(kind="adjustment", lines=[(clearing, 500), (Account.objects.get(pk=ids["p1"]),
                                                           -500)],
               reference_type="adjustment", reference_id="adj_after_migration")
    flows.post_capture(merchant=m2, payment_id="pay_new", provider="sandbox", currency="usd",
                       amount=700)
    assert JournalEntry.objects.order_by("-sequence").first().sequence > 5
    checkpoint_create()
    result = ledger_verify()
    assert result.ok, result.report()
