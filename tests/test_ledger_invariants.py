"""The database itself refuses what the ledger forbids, even from raw SQL that skips entry_post."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from ledger.flows import post_capture, post_deposit_confirmed
from ledger.models import Account, JournalEntry, Posting
from ledger.services import account_for

RAW_ENTRY = """
    INSERT INTO ledger_journalentry
        (id, sequence, kind, description, reference_type, reference_id, merchant_id,
         created_at, hash)
    VALUES (%s, nextval('ledger_entry_sequence'), %s, 'raw', 'test', %s, NULL, now(),
            repeat('f', 64))"""
# balance_after and the chain link computed like entry_post does (the hash itself is not
# recomputable in SQL; only ledger_verify checks it), so only the rule under test can fail.
RAW_POSTING = """
    INSERT INTO ledger_posting
        (id, entry_id, account_id, merchant_id, amount, currency, balance_after, created_at,
         account_version, prev_hash, hash)
    SELECT %s, %s, a.id, a.merchant_id, %s, COALESCE(%s, a.currency), a.balance + %s, now(),
           a.version + 1, a.head_hash, md5(%s) || md5(%s)
      FROM ledger_account a WHERE a.id = %s"""


def raw_entry(cursor, entry_id: str, kind: str = "adjustment") -> None:
    cursor.execute(RAW_ENTRY, [entry_id, kind, entry_id])


def raw_posting(cursor, posting_id: str, entry_id: str, account: Account, amount: int,
                currency: str | None = None) -> None:
    cursor.execute(RAW_POSTING, [posting_id, entry_id, amount, currency, amount, posting_id,
                                 entry_id, account.id])


def check_deferred_now(cursor) -> None:
    """Run the deferred constraint triggers now instead of at COMMIT (the test never commits)."""
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


@pytest.fixture
def accounts(merchant):
    return (account_for(merchant=merchant, currency="usd", kind="pending"),
            account_for(currency="usd", kind="provider_clearing", provider="sandbox"))


@contextmanager
def refused(match: str, *, error: type[Exception] = IntegrityError,
            at_commit: bool = False) -> Iterator[Any]:
    """The raw SQL run in the block is refused by PostgreSQL with `error` matching `match`: at
    once, or when the deferred COMMIT-time checks run (`at_commit`); nothing of it stays."""
    with connection.cursor() as cursor, pytest.raises(error, match=match):
        with transaction.atomic():
            yield cursor
            if at_commit:
                check_deferred_now(cursor)


@pytest.mark.django_db(transaction=True)
def test_raw_unbalanced_entry_is_accepted_statement_by_statement_but_fails_at_commit(accounts):
    pending, clearing = accounts
    statements_ran = False
    with pytest.raises(IntegrityError, match="usd postings sum to 1, not zero"):
        with transaction.atomic(), connection.cursor() as cursor:
            raw_entry(cursor, "txn_unbalanced")
            raw_posting(cursor, "bt_raw1", "txn_unbalanced", pending, 1000)
            raw_posting(cursor, "bt_raw2", "txn_unbalanced", clearing, -999)
            statements_ran = True
    assert statements_ran  # so it was COMMIT that refused
    assert not JournalEntry.objects.exists()
    assert Account.objects.get(pk=pending.pk).balance == 0


@pytest.mark.django_db(transaction=True)
def test_raw_balanced_entry_commits(accounts):
    pending, clearing = accounts
    with transaction.atomic(), connection.cursor() as cursor:
        raw_entry(cursor, "txn_balanced")
        raw_posting(cursor, "bt_raw1", "txn_balanced", pending, 1000)
        raw_posting(cursor, "bt_raw2", "txn_balanced", clearing, -1000)
    assert Account.objects.get(pk=pending.pk).balance == 1000


@pytest.mark.django_db
def test_entry_with_one_posting_is_refused(accounts):
    pending, _ = accounts
    with refused("has 1 posting", at_commit=True) as cursor:
        raw_entry(cursor, "txn_single")
        raw_posting(cursor, "bt_raw1", "txn_single", pending, 1000)


@pytest.mark.django_db
def test_entry_without_postings_is_refused():
    with refused("has 0 posting", at_commit=True) as cursor:
        raw_entry(cursor, "txn_empty")


@pytest.mark.django_db
def test_entry_balanced_in_total_but_not_per_currency_is_refused(merchant):
    usd = account_for(merchant=merchant, currency="usd", kind="pending")
    eur = account_for(merchant=merchant, currency="eur", kind="pending")
    with refused("not zero", at_commit=True) as cursor:
        raw_entry(cursor, "txn_fx")
        raw_posting(cursor, "bt_raw1", "txn_fx", usd, 500)
        raw_posting(cursor, "bt_raw2", "txn_fx", eur, -500)


@pytest.fixture
def posted(merchant):
    return post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                        currency="usd", amount=1000)


@pytest.mark.django_db
@pytest.mark.parametrize("sql", [
    "UPDATE ledger_posting SET amount = amount + 1",
    "UPDATE ledger_posting SET balance_after = 0",
    "DELETE FROM ledger_posting",
    "UPDATE ledger_journalentry SET description = 'edited'",
    "UPDATE ledger_journalentry SET hash = repeat('a', 64)",
    "DELETE FROM ledger_journalentry",
])
def test_raw_update_or_delete_of_postings_and_entries_is_refused(posted, sql):
    with refused("immutable", error=DatabaseError) as cursor:
        cursor.execute(sql)
    assert Posting.objects.filter(entry=posted).count() == 2


@pytest.mark.django_db
def test_posting_in_another_currency_than_its_account_is_refused(accounts):
    pending, _ = accounts
    with refused("currency eur") as cursor:
        raw_entry(cursor, "txn_ccy")
        raw_posting(cursor, "bt_raw1", "txn_ccy", pending, 1000, currency="eur")


@pytest.mark.django_db
def test_posting_with_wrong_balance_after_is_refused(accounts):
    pending, _ = accounts
    with refused("balance_after") as cursor:
        raw_entry(cursor, "txn_after")
        cursor.execute(
            "INSERT INTO ledger_posting (id, entry_id, account_id, merchant_id, amount, "
            "currency, balance_after, created_at, account_version, prev_hash, hash) "
            "VALUES ('bt_x', 'txn_after', %s, %s, 10, 'usd', 999, now(), 1, "
            "repeat('0', 64), repeat('e', 64))", [pending.id, pending.merchant_id])


@pytest.mark.django_db
def test_account_balance_cannot_be_updated_directly(posted, merchant):
    with pytest.raises(IntegrityError, match="only by inserting postings"), transaction.atomic():
        Account.objects.filter(merchant=merchant).update(balance=1_000_000)
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        Account.objects.filter(merchant=merchant).update(currency="eur")


@pytest.mark.django_db
def test_account_cannot_be_created_with_a_balance(merchant):
    with pytest.raises(IntegrityError, match="balance 0"), transaction.atomic():
        Account.objects.create(merchant=merchant, currency="usd", kind="available",
                               balance=500)


@pytest.mark.django_db
def test_reserved_balance_can_never_go_negative_even_from_raw_sql(merchant):
    reserved = account_for(merchant=merchant, currency="usd", kind="reserved")
    fees = account_for(currency="usd", kind="fees")
    with refused("reserved_nonneg") as cursor:
        raw_entry(cursor, "txn_res", kind="reversal")
        raw_posting(cursor, "bt_raw1", "txn_res", reserved, -1)
        raw_posting(cursor, "bt_raw2", "txn_res", fees, 1)


@pytest.mark.django_db
@pytest.mark.parametrize(("kind", "refused"), [
    ("payout_created", True), ("adjustment", True), ("refund_created", False),
    ("dispute_opened", False),
])
def test_only_refund_dispute_and_reversal_entries_may_overdraw_available(merchant, kind,
                                                                         refused):
    post_deposit_confirmed(merchant=merchant, deposit_id="dep_1", currency="usd", amount=100)
    available = account_for(merchant=merchant, currency="usd", kind="available")
    reserved = account_for(merchant=merchant, currency="usd", kind="reserved")
    with connection.cursor() as cursor:
        if refused:
            with pytest.raises(IntegrityError, match="below zero"), transaction.atomic():
                raw_entry(cursor, "txn_od", kind=kind)
                raw_posting(cursor, "bt_raw1", "txn_od", available, -150)
        else:
            raw_entry(cursor, "txn_od", kind=kind)
            raw_posting(cursor, "bt_raw1", "txn_od", available, -150)
            raw_posting(cursor, "bt_raw2", "txn_od", reserved, 150)
            check_deferred_now(cursor)
            assert Account.objects.get(pk=available.pk).balance == -50


@pytest.mark.django_db
@pytest.mark.parametrize("version, prev", [("a.version + 1", "repeat('0', 64)"),
                                           ("a.version + 2", "a.head_hash"),
                                           ("a.version", "a.head_hash")])
def test_posting_that_does_not_link_to_its_accounts_chain_head_is_refused(posted, version,
                                                                            prev):
    pending = Account.objects.get(kind="pending")
    assert pending.version == 1
    with refused("chain link") as cursor:
        raw_entry(cursor, "txn_fork")
        cursor.execute(
            "INSERT INTO ledger_posting (id, entry_id, account_id, merchant_id, amount, "
            "currency, balance_after, created_at, account_version, prev_hash, hash) "
            f"SELECT 'bt_fork', 'txn_fork', a.id, a.merchant_id, 5, a.currency, "
            f"a.balance + 5, now(), {version}, {prev}, repeat('e', 64) "
            "FROM ledger_account a WHERE a.id = %s", [pending.pk])


@pytest.mark.django_db
def test_chain_head_changes_only_through_a_posting(posted):
    pending = Account.objects.get(kind="pending")
    with refused("chain heads") as cursor:
        cursor.execute("UPDATE ledger_account SET head_hash = repeat('0', 64) WHERE id = %s",
                       [pending.pk])
