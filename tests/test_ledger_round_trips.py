"""entry_post's round trips are counted, so a statement added back fails here, not in a bench.

An entry is 2 executes (several statements sent as one query each), inside a caller's
transaction or not: outside one its own BEGIN and COMMIT ride in them (7 before batching, 5 with
the global chain lock of migration 0002), inside one its savepoint's SAVEPOINT and RELEASE do
(8 before batching). No advisory lock anywhere: the only locks are the accounts' rows.
"""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from core.errors import InsufficientFunds
from ledger import services
from ledger.models import Account, JournalEntry
from ledger.services import account_for, entry_post
from ledger.verify import ledger_verify


@pytest.fixture
def accounts(merchant):
    available = account_for(merchant=merchant, currency="usd", kind="available")
    clearing = account_for(currency="usd", kind="deposits_clearing")
    return available, clearing


def deposit(accounts, amount: int, ref: str = "dep_1") -> JournalEntry:
    available, clearing = accounts
    return entry_post(kind="deposit_confirmed", lines=[(clearing, -amount), (available, amount)],
                      reference_type="deposit", reference_id=ref)


def executed(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in captured.captured_queries]


def balance(account: Account) -> int:
    return Account.objects.get(pk=account.pk).balance


def assert_lock_then_replay(sql: str) -> None:
    # The replay SELECT must come after the locks, in its own statement (its own snapshot).
    assert sql.index("FOR NO KEY UPDATE;") < sql.index("FROM ledger_journalentry x")


@pytest.mark.django_db(transaction=True)
def test_entry_post_outside_a_transaction_is_two_executes_with_begin_and_commit(accounts):
    deposit(accounts, 10, "dep_0")
    with CaptureQueriesContext(connection) as captured:
        entry = deposit(accounts, 100)
    locks, inserts = executed(captured)
    assert locks.startswith("BEGIN; ") and inserts.endswith("; COMMIT")
    assert_lock_then_replay(locks)
    assert locks.index("FOR NO KEY UPDATE") < locks.index("nextval('ledger_entry_sequence')")
    assert inserts.index("INSERT INTO ledger_journalentry") < inserts.index(
        "INSERT INTO ledger_posting")
    assert "advisory" not in " ".join(executed(captured))  # no global lock
    stored = JournalEntry.objects.get(pk=entry.pk)
    assert (stored.sequence, stored.hash, stored.created_at) == (
        entry.sequence, entry.hash, entry.created_at)
    assert entry.postings.count() == 2
    assert balance(accounts[0]) == 110
    assert ledger_verify().ok


@pytest.mark.django_db
def test_entry_post_in_a_callers_transaction_is_two_executes_with_its_savepoint(accounts):
    deposit(accounts, 10, "dep_0")
    with CaptureQueriesContext(connection) as captured:
        deposit(accounts, 100)
    locks, inserts = executed(captured)
    assert locks.startswith("SAVEPOINT ledger_entry_post; ")
    assert_lock_then_replay(locks)
    assert inserts.endswith("; RELEASE SAVEPOINT ledger_entry_post")
    assert balance(accounts[0]) == 110


@pytest.mark.django_db
def test_a_replay_is_one_execute_and_inserts_nothing(accounts):
    first = deposit(accounts, 100)
    with CaptureQueriesContext(connection) as captured:
        assert deposit(accounts, 100) == first
    locks, release = executed(captured)
    assert_lock_then_replay(locks)
    assert release == "RELEASE SAVEPOINT ledger_entry_post"
    with pytest.raises(ValueError, match="different postings"):
        deposit(accounts, 99)
    replayed = deposit(accounts, 100)
    assert (replayed.pk, replayed.hash, replayed.sequence) == (first.pk, first.hash,
                                                              first.sequence)
    assert balance(accounts[0]) == 100


@pytest.mark.django_db
def test_insufficient_funds_rolls_back_to_the_savepoint_in_the_same_round_trip_count(accounts):
    available, clearing = accounts
    deposit(accounts, 10)
    with CaptureQueriesContext(connection) as captured:
        with pytest.raises(InsufficientFunds, match=r"available balance is 0\.10 USD"):
            entry_post(kind="adjustment", lines=[(available, -50), (clearing, 50)],
                       reference_type="test", reference_id="x")
    locks, rollback = executed(captured)
    assert "INSERT" not in locks  # refused before anything was written
    assert rollback == ("ROLLBACK TO SAVEPOINT ledger_entry_post; "
                        "RELEASE SAVEPOINT ledger_entry_post")
    deposit(accounts, 5, "dep_2")  # the caller's transaction is still usable
    assert balance(available) == 15


@pytest.mark.django_db
def test_the_overdraft_trigger_sees_the_entry_inserted_in_the_same_round_trip(accounts,
                                                                           monkeypatch):
    """Skip the Python check so only PostgreSQL decides: the posting trigger reads the entry's
    kind, which a data-modifying CTE would hide from it (and so refuse even a refund)."""
    available, clearing = accounts
    reserved = account_for(merchant=available.merchant, currency="usd", kind="reserved")
    monkeypatch.setattr(services, "NO_OVERDRAFT_KINDS", frozenset())
    with pytest.raises(IntegrityError, match="adjustment entry may not take available"):
        entry_post(kind="adjustment", lines=[(available, -50), (clearing, 50)],
                   reference_type="test", reference_id="x")
    # Rolled back to the savepoint: nothing written, and the caller's transaction goes on.
    assert not JournalEntry.objects.filter(reference_type="test").exists()
    entry_post(kind="refund_created", lines=[(available, -50), (reserved, 50)],
               reference_type="refund", reference_id="re_1",
               allow_negative=frozenset({"available"}))
    assert (balance(available), balance(reserved)) == (-50, 50)
    with transaction.atomic():
        assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_flow_names_its_accounts_by_key_and_looks_nothing_up_first(merchant):
    """post_capture creates the merchant's pending account and the clearing shard on first use
    and finds them afterwards inside the locking round trip: no account_for round trips."""
    from ledger import flows

    for payment_id in ("pay_first", "pay_second"):
        with CaptureQueriesContext(connection) as captured:
            flows.post_capture(merchant=merchant, payment_id=payment_id, provider="sandbox",
                               currency="usd", amount=100)
        locks, inserts = executed(captured)
        assert locks.startswith("BEGIN; INSERT INTO ledger_account")  # ON CONFLICT DO NOTHING
        assert "FOR NO KEY UPDATE" in locks and inserts.startswith("INSERT INTO ledger_journal")
        assert inserts.endswith("; COMMIT")
    pending = Account.objects.get(merchant=merchant, kind="pending")
    assert (pending.balance, pending.version) == (200, 2)
    assert Account.objects.filter(kind="provider_clearing").count() == 1
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_refused_entry_outside_a_transaction_rolls_back_its_own(accounts):
    available, clearing = accounts
    deposit(accounts, 10)
    with pytest.raises(InsufficientFunds):
        entry_post(kind="adjustment", lines=[(available, -50), (clearing, 50)],
                   reference_type="test", reference_id="x")
    with connection.cursor() as cursor:  # the connection is usable and outside a transaction
        cursor.execute("SELECT 1")
    assert connection.get_autocommit() and not connection.in_atomic_block
    deposit(accounts, 5, "dep_2")
    assert balance(available) == 15
    assert ledger_verify().ok
