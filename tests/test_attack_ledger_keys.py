"""Attacks on accounts named by key (AccountKey), entry_post's own BEGIN/COMMIT in autocommit and
the merchant an entry is derived to belong to (commits dd45b69, 36ee3dd, 358d3eb).

Real threads and real PostgreSQL: accounts created by key from many connections at once, locks
waited for while the row changes underneath (EvalPlanQual), failures at every point of the two
round trips (Python between them, a deferred trigger at COMMIT, Ctrl-C while blocked on a lock,
a killed backend), callers in a transaction, in autocommit, with autocommit off or durable.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import Error, connection, connections, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from psycopg import pq

import ledger.services as services
from core.errors import InsufficientFunds
from ledger import flows
from ledger.models import Account, JournalEntry, Posting
from ledger.services import (
    AccountKey,
    EntrySpec,
    account_for,
    account_key,
    clearing_key,
    entries_post,
    entry_post,
)
from ledger.verify import ledger_verify
from tests.factories import MerchantFactory
from tests.threads import run_threads


# -- helpers ---------------------------------------------------------------------------------
@contextmanager
def other_connection(*, autocommit: bool = True) -> Iterator[Any]:
    """A second, independent connection to the same database (not this thread's)."""
    other = connections.create_connection("default")
    other.ensure_connection()
    other.set_autocommit(autocommit)
    try:
        yield other
    finally:
        try:
            if not autocommit:
                other.rollback()
        finally:
            other.close()


def counts_seen_from_outside() -> tuple[int, int, int]:
    """(accounts, entries, postings) as another connection sees them: what is committed."""
    with other_connection() as other, other.cursor() as cursor:
        cursor.execute("SELECT (SELECT count(*) FROM ledger_account), "
                       "(SELECT count(*) FROM ledger_journalentry), "
                       "(SELECT count(*) FROM ledger_posting)")
        return tuple(cursor.fetchone())  # type: ignore[return-value]


def assert_clean_autocommit() -> None:
    """Django and psycopg agree: autocommit, no atomic block, no transaction left open, and the
    connection answers a query."""
    assert connection.get_autocommit() is True
    assert not connection.in_atomic_block
    assert not connection.needs_rollback
    assert connection.connection.info.transaction_status == pq.TransactionStatus.IDLE
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection.info.transaction_status == pq.TransactionStatus.IDLE


def backend_pid(conn: Any = connection) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def capture_lines(merchant, amount: int = 100) -> list:
    return [(clearing_key(merchant=merchant, currency="usd", provider="sandbox"), -amount),
            (account_key(merchant=merchant, currency="usd", kind="pending"), amount)]


# -- the own-transaction mode under failure at every point ----------------------------------
@pytest.mark.django_db(transaction=True)
def test_own_mode_insufficient_funds_between_round_trips_leaves_nothing_and_a_clean_connection():
    merchant = MerchantFactory()
    before = counts_seen_from_outside()
    with pytest.raises(InsufficientFunds):
        # available (created by this very call) may not go below zero for a payout.
        entry_post(kind="payout_created",
                   lines=[(account_key(merchant=merchant, currency="usd", kind="available"), -5),
                          (account_key(merchant=merchant, currency="usd", kind="reserved"), 5)],
                   reference_type="payout", reference_id="po_1")
    assert_clean_autocommit()
    # The accounts its first round trip created were rolled back with it.
    assert counts_seen_from_outside() == before
    assert not Account.objects.filter(merchant=merchant).exists()
    entry = flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                               currency="usd", amount=100)
    assert JournalEntry.objects.filter(pk=entry.pk).exists()
    assert_clean_autocommit()
    assert ledger_verify().ok


class _NotAnException(BaseException):
    pass


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, _NotAnException,
                                    RuntimeError])
def test_own_mode_any_interruption_between_round_trips_rolls_back(monkeypatch, raised):
    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_0", provider="sandbox",
                       currency="usd", amount=100)
    before = counts_seen_from_outside()

    def interrupted(*args, **kwargs):
        raise raised("between the round trips")

    monkeypatch.setattr(services, "_build", interrupted)
    with pytest.raises(raised):
        flows.post_capture(merchant=MerchantFactory(), payment_id="pay_1", provider="sandbox",
                           currency="usd", amount=100)
    monkeypatch.undo()
    assert_clean_autocommit()
    assert counts_seen_from_outside() == before
    # The clearing shard it had locked is free again: another connection can lock it now.
    with other_connection(autocommit=False) as other, other.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '2s'")
        cursor.execute("SELECT id FROM ledger_account FOR NO KEY UPDATE")
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_own_mode_deferred_constraint_failing_at_commit_leaves_nothing(monkeypatch):
    """The entry's postings pass every immediate trigger but do not balance: the deferred
    constraint trigger fails the COMMIT riding in the second round trip."""
    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_0", provider="sandbox",
                       currency="usd", amount=100)
    before = counts_seen_from_outside()
    original = services._build

    def unbalanced(*args, **kwargs):
        entries, postings = original(*args, **kwargs)
        postings[-1].amount += 1
        postings[-1].balance_after += 1
        return entries, postings

    monkeypatch.setattr(services, "_build", unbalanced)
    with pytest.raises(Error, match="sum to"):
        flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                           currency="usd", amount=100)
    monkeypatch.undo()
    assert_clean_autocommit()
    assert counts_seen_from_outside() == before
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                       currency="usd", amount=100)
    assert ledger_verify().ok


def ctrl_c_while_blocked(lock_sql: str, params: list, post: Callable[[], Any]) -> None:
    """Another connection holds `lock_sql`'s row lock; `post()` waits on it and gets Ctrl-C
    (SIGALRM → KeyboardInterrupt) after half a second, as a person at a terminal would."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with other_connection(autocommit=False) as other:
            with other.cursor() as cursor:
                cursor.execute(lock_sql, params)
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            with pytest.raises(KeyboardInterrupt):
                post()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.django_db(transaction=True)
def test_own_mode_ctrl_c_while_blocked_on_an_account_lock_rolls_back_the_accounts_it_made():
    """Ctrl-C (SIGINT → KeyboardInterrupt) while the first round trip waits for a lock another
    connection holds: psycopg cancels the query, entry_post rolls back the BEGIN it sent, and
    the merchant account its INSERT … ON CONFLICT had created is gone with it."""
    fees = account_for(currency="usd", kind="fees")
    merchant = MerchantFactory()
    before = counts_seen_from_outside()
    ctrl_c_while_blocked("SELECT id FROM ledger_account WHERE id = %s FOR UPDATE", [fees.pk],
                         lambda: entry_post(
                             kind="adjustment", reference_type="t", reference_id="1",
                             lines=[(account_key(currency="usd", kind="fees"), -100),
                                    (account_key(merchant=merchant, currency="usd",
                                                 kind="pending"), 100)]))
    assert_clean_autocommit()
    assert counts_seen_from_outside() == before
    assert not Account.objects.filter(merchant=merchant).exists()
    entry_post(kind="adjustment", reference_type="t", reference_id="1",
               lines=[(fees, -100),
                      (account_key(merchant=merchant, currency="usd", kind="pending"), 100)])
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_own_mode_connection_killed_between_round_trips_writes_nothing_and_django_recovers(
        monkeypatch):
    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_0", provider="sandbox",
                       currency="usd", amount=100)
    before = counts_seen_from_outside()
    pid = backend_pid()
    original = services._build

    def kill_then_build(*args, **kwargs):
        with other_connection() as other, other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "_build", kill_then_build)
    with pytest.raises(Error):
        flows.post_capture(merchant=MerchantFactory(), payment_id="pay_1", provider="sandbox",
                           currency="usd", amount=100)
    monkeypatch.undo()
    assert counts_seen_from_outside() == before
    # Django's end-of-request hook sees the error and drops the connection; the next query
    # reconnects, in autocommit, with no transaction open.
    assert connection.errors_occurred
    connection.close_if_unusable_or_obsolete()
    assert connection.connection is None
    assert backend_pid() != pid
    assert_clean_autocommit()
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                       currency="usd", amount=100)
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_own_mode_replay_only_commits_and_leaves_no_transaction_open():
    merchant = MerchantFactory()
    first = flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                               currency="usd", amount=100)
    again = flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                               currency="usd", amount=100)
    assert again.pk == first.pk
    assert_clean_autocommit()
    with pytest.raises(ValueError, match="different postings"):
        flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                           currency="usd", amount=101)
    assert_clean_autocommit()
    assert JournalEntry.objects.count() == 1


# -- callers' transactions -------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_failed_post_inside_a_callers_transaction_leaves_it_usable_with_its_callbacks():
    merchant = MerchantFactory()
    fired: list[str] = []
    with transaction.atomic():
        transaction.on_commit(lambda: fired.append("before"))
        with pytest.raises(InsufficientFunds):
            entry_post(kind="payout_created",
                       lines=[(account_key(merchant=merchant, currency="usd", kind="available"),
                               -5),
                              (account_key(merchant=merchant, currency="usd", kind="reserved"),
                               5)],
                       reference_type="payout", reference_id="po_1")
        assert not connection.needs_rollback
        flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                           currency="usd", amount=100)
        transaction.on_commit(lambda: fired.append("after"))
        assert fired == []
    assert fired == ["before", "after"]
    assert list(JournalEntry.objects.values_list("kind", flat=True)) == ["capture"]
    # The failed post's accounts were rolled back to its savepoint; the capture's were kept.
    assert set(Account.objects.filter(merchant=merchant).values_list("kind", flat=True)) == {
        "pending"}
    assert_clean_autocommit()
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_caller_with_autocommit_off_decides_whether_the_entry_and_its_accounts_stay():
    merchant = MerchantFactory()
    transaction.set_autocommit(False)
    try:
        flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                           currency="usd", amount=100)
        assert counts_seen_from_outside() == (0, 0, 0)  # nothing committed behind its back
        transaction.rollback()
        assert not Account.objects.exists() and not JournalEntry.objects.exists()
        flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                           currency="usd", amount=100)
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert counts_seen_from_outside() == (2, 1, 2)
    assert_clean_autocommit()
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_durable_atomic_before_after_and_around_own_mode_posts():
    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                       currency="usd", amount=100)
    with transaction.atomic(durable=True):  # Django must not think a transaction is open
        flows.post_capture(merchant=merchant, payment_id="pay_2", provider="sandbox",
                           currency="usd", amount=100)
    flows.post_capture(merchant=merchant, payment_id="pay_3", provider="sandbox",
                       currency="usd", amount=100)
    with transaction.atomic(durable=True):
        pass
    assert JournalEntry.objects.count() == 3
    assert_clean_autocommit()


@pytest.mark.django_db(transaction=True)
def test_on_commit_in_autocommit_runs_once_after_the_entry_is_committed():
    merchant = MerchantFactory()
    seen: list[tuple[int, int]] = []
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                       currency="usd", amount=100)
    transaction.on_commit(lambda: seen.append(counts_seen_from_outside()[1:]))
    assert seen == [(1, 2)]


@pytest.mark.django_db
def test_in_a_tests_transaction_a_failed_post_rolls_back_to_its_savepoint_only():
    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                       currency="usd", amount=100)
    with pytest.raises(InsufficientFunds):
        flows.post_payout_created(merchant=merchant, payout_id="po_1", currency="usd",
                                  amount=1)
    assert not connection.needs_rollback
    assert JournalEntry.objects.count() == 1
    assert not Account.objects.filter(kind="reserved").exists()


# -- keys naming accounts that must not exist ------------------------------------------------
def _bad_keys(merchant_id: str) -> dict[str, Callable[[], list]]:
    """Lines whose first account must never exist; the rest balances them. Built when called:
    AccountKey itself refuses a bad key when it is made (ValueError), before any SQL."""
    def fees() -> AccountKey:
        return AccountKey(None, "usd", "fees")

    return {
        "shard on a merchant account": lambda: [
            (AccountKey(merchant_id, "usd", "pending", "", 3), -1), (fees(), 1)],
        "unknown kind": lambda: [(AccountKey(None, "usd", "bogus"), -1), (fees(), 1)],
        "upper-case currency": lambda: [(AccountKey(None, "USD", "fees"), -1),
                                        (AccountKey(None, "USD", "payouts_in_transit"), 1)],
        "provider on fees": lambda: [(AccountKey(None, "usd", "fees", "sandbox"), -1),
                                     (AccountKey(None, "usd", "payouts_in_transit"), 1)],
        "clearing without provider": lambda: [
            (AccountKey(None, "usd", "provider_clearing"), -1), (fees(), 1)],
        "merchant-owned clearing": lambda: [
            (AccountKey(merchant_id, "usd", "provider_clearing", "sandbox"), -1), (fees(), 1)],
        "platform-owned pending": lambda: [(AccountKey(None, "usd", "pending"), -1),
                                           (fees(), 1)],
        "merchant that does not exist": lambda: [
            (AccountKey("acct_nope", "usd", "pending"), -1), (fees(), 1)],
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", list(_bad_keys("x")))
def test_the_database_refuses_to_create_accounts_that_must_not_exist(case):
    merchant = MerchantFactory()
    with pytest.raises((ValueError, Error)):
        entry_post(kind="adjustment", lines=_bad_keys(merchant.pk)[case](),
                   reference_type="t", reference_id=case)
    assert_clean_autocommit()
    assert counts_seen_from_outside() == (0, 0, 0)


@pytest.mark.parametrize("kwargs", [
    {"currency": "xyz", "kind": "fees"},
    {"currency": "USD", "kind": "fees"},
    {"currency": "usd", "kind": "bogus"},
    {"currency": "usd", "kind": "fees", "provider": "sandbox"},
    {"currency": "usd", "kind": "provider_clearing"},
    {"currency": "usd", "kind": "pending"},
    {"currency": "usd", "kind": "provider_clearing", "provider": "sandbox", "merchant": "m"},
    {"currency": "usd", "kind": "pending", "merchant": "m", "shard": 1},
    {"currency": "usd", "kind": "fees", "merchant": "m"},
])
def test_account_key_refuses_accounts_that_must_not_exist(kwargs):
    if kwargs.get("merchant") == "m":
        kwargs = {**kwargs, "merchant": MerchantFactory.build()}
    with pytest.raises(ValueError):
        account_key(**kwargs)


# -- the merchant of an entry ----------------------------------------------------------------
@pytest.mark.django_db
def test_the_merchant_of_an_entry_is_derived_from_its_accounts():
    merchant = MerchantFactory()
    entry = entry_post(kind="adjustment", reference_type="t", reference_id="1",
                       lines=[(account_key(currency="usd", kind="fees"), -100),
                              (account_key(merchant=merchant, currency="usd", kind="pending"),
                               100)])
    assert entry.merchant_id == merchant.pk
    entry.refresh_from_db()
    assert entry.merchant_id == merchant.pk


@pytest.mark.django_db
def test_a_line_of_another_merchant_is_refused_before_sql_when_the_merchant_is_given():
    mine, theirs = MerchantFactory(), MerchantFactory()
    with CaptureQueriesContext(connection) as queries, pytest.raises(ValueError,
                                                                     match="another merchant"):
        entry_post(kind="adjustment", reference_type="t", reference_id="1", merchant=mine,
                   lines=[(account_key(merchant=mine, currency="usd", kind="pending"), 100),
                          (account_key(merchant=theirs, currency="usd", kind="pending"), -100)])
    assert len(queries) == 0


@pytest.mark.django_db(transaction=True)
def test_a_stale_account_instance_claiming_another_owner_is_refused_by_the_trigger():
    """Python trusts the instance's merchant_id; the posting copies the owner from the locked
    row, so PostgreSQL sees merchant B's account in merchant A's entry and refuses it."""
    a, b = MerchantFactory(), MerchantFactory()
    theirs = account_for(merchant=b, currency="usd", kind="pending")
    before = counts_seen_from_outside()
    theirs.merchant_id = a.pk  # a stale or tampered instance
    with pytest.raises(Error, match="belongs to merchant"):
        entry_post(kind="adjustment", reference_type="t", reference_id="1", merchant=a,
                   lines=[(theirs, 100), (account_key(currency="usd", kind="fees"), -100)])
    assert_clean_autocommit()
    assert counts_seen_from_outside() == before


# -- Account instances and keys for the same account -----------------------------------------
@pytest.mark.django_db
def test_an_account_and_its_key_in_one_entry_are_the_same_account_refused_before_sql():
    merchant = MerchantFactory()
    pending = account_for(merchant=merchant, currency="usd", kind="pending")
    key = account_key(merchant=merchant, currency="usd", kind="pending")
    for lines in ([(pending, 100), (key, -100)], [(key, 100), (pending, -100)]):
        with CaptureQueriesContext(connection) as queries, pytest.raises(ValueError,
                                                                         match="twice"):
            entry_post(kind="adjustment", reference_type="t", reference_id="1", lines=lines)
        assert len(queries) == 0


@pytest.mark.django_db
def test_a_batch_naming_one_account_by_instance_and_by_key_chains_it_once_in_order():
    merchant = MerchantFactory()
    pending = account_for(merchant=merchant, currency="usd", kind="pending")
    key = account_key(merchant=merchant, currency="usd", kind="pending")
    clearing = clearing_key(merchant=merchant, currency="usd", provider="sandbox")
    specs = [EntrySpec(kind="capture", reference_type="payment", reference_id=f"pay_{i}",
                       lines=[(clearing, -100 * (i + 1)), (pending if i % 2 else key,
                                                           100 * (i + 1))])
             for i in range(4)]
    entries = entries_post(specs)
    assert len({e.pk for e in entries}) == 4
    pending.refresh_from_db()
    assert (pending.balance, pending.version) == (1000, 4)
    after = list(Posting.objects.filter(account=pending).order_by("account_version")
                 .values_list("account_version", "balance_after"))
    assert after == [(1, 100), (2, 300), (3, 600), (4, 1000)]
    assert Account.objects.filter(merchant=merchant).count() == 1
    assert ledger_verify().ok


# -- races on accounts created and locked by key ---------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_many_threads_creating_the_same_accounts_by_key_in_batches_make_each_once():
    """16 connections post batches of 1–4 entries naming fresh merchant accounts (in random
    order, some by instance once they exist) and the platform accounts: no duplicate account,
    no deadlock, no lost posting."""
    merchants = [MerchantFactory() for _ in range(5)]
    kinds = ("pending", "available")

    def work(worker: int) -> list[tuple[str, str, int]]:
        rng = random.Random(worker)
        done = []
        for n in range(12):
            specs, moves = [], []
            for m in rng.sample(range(5), rng.randint(1, 4)):
                merchant = merchants[m]
                kind = rng.choice(kinds)
                amount = rng.randint(1, 1000)
                target: Any = account_key(merchant=merchant, currency="usd", kind=kind)
                if rng.random() < 0.3:
                    existing = Account.objects.filter(merchant=merchant, currency="usd",
                                                      kind=kind).first()
                    target = existing or target
                source = (clearing_key(merchant=merchant, currency="usd", provider="sandbox")
                          if rng.random() < 0.5 else account_key(currency="usd",
                                                                 kind="deposits_clearing"))
                specs.append(EntrySpec(kind="adjustment", reference_type="stress",
                                       reference_id=f"{worker}-{n}-{m}",
                                       lines=[(source, -amount), (target, amount)]))
                moves.append((merchant.pk, kind, amount))
            entries_post(specs)
            done.extend(moves)
        return done

    results, errors = run_threads(16, work)
    assert errors == []
    expected: Counter = Counter()
    for moves in results:
        for owner, kind, amount in moves:
            expected[(owner, kind)] += amount
    accounts = Account.objects.filter(merchant__isnull=False)
    keys = Counter((a.merchant_id, a.kind) for a in accounts)
    assert max(keys.values()) == 1  # one row per key
    assert {(a.merchant_id, a.kind): a.balance for a in accounts} == dict(expected)
    assert Account.objects.aggregate(total=Sum("balance"))["total"] == 0
    assert JournalEntry.objects.count() == sum(
        1 for moves in results for _ in moves)  # one entry per merchant per batch
    result = ledger_verify()
    assert result.ok, result.report()


@pytest.mark.django_db(transaction=True)
def test_the_same_capture_posted_by_key_from_many_threads_on_fresh_accounts_posts_once():
    merchant = MerchantFactory()

    def work(i: int) -> str:
        return flows.post_capture(merchant=merchant, payment_id="pay_same", provider="sandbox",
                                  currency="usd", amount=100).pk

    results, errors = run_threads(12, work)
    assert errors == []
    assert len(set(results)) == 1
    assert JournalEntry.objects.count() == 1
    assert Account.objects.get(merchant=merchant).balance == 100
    assert ledger_verify().ok


def _wait_until_blocked(pid: int) -> None:
    deadline = time.monotonic() + 10
    with other_connection() as other, other.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
            row = cursor.fetchone()
            if row and row[0] == "Lock":
                return
            time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


def _post_in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["pid"] = backend_pid()
            out["ready"] = True
            out["result"] = work()
        except BaseException as exc:
            out["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 10
    while "ready" not in out and time.monotonic() < deadline:
        time.sleep(0.005)
    return thread, out


def _wait_behind_a_capture(merchant, holder_ends: str, waiter: Callable[[], Any]) -> None:
    """A holder posts a capture inside a longer transaction; `waiter` runs meanwhile and must
    wait for its locks; then the holder commits or rolls back, and both must finish cleanly."""
    release = threading.Event()

    def holder() -> None:
        with transaction.atomic():
            flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                               currency="usd", amount=10)
            release.wait(10)
            if holder_ends == "rollback":
                transaction.set_rollback(True)

    hold_thread, hold = _post_in_thread(holder)
    time.sleep(0.3)
    wait_thread, waited = _post_in_thread(waiter)
    _wait_until_blocked(waited["pid"])
    release.set()
    hold_thread.join(10)
    wait_thread.join(10)
    assert "error" not in hold and "error" not in waited, (hold, waited)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("holder_ends", ["commit", "rollback"])
def test_a_post_waiting_on_an_account_updated_meanwhile_still_locks_and_posts_it(holder_ends):
    """EvalPlanQual: the waiter's locked scan must not drop the row the holder updated."""
    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_0", provider="sandbox",
                       currency="usd", amount=100)
    pending = Account.objects.get(merchant=merchant, kind="pending")
    _wait_behind_a_capture(merchant, holder_ends, lambda: flows.post_capture(
        merchant=merchant, payment_id="pay_2", provider="sandbox", currency="usd", amount=1))
    pending.refresh_from_db()
    expected = (111, 3) if holder_ends == "commit" else (101, 2)
    assert (pending.balance, pending.version) == expected
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("holder_ends", ["commit", "rollback"])
def test_a_post_waiting_on_another_transaction_creating_its_account_by_key(holder_ends):
    """The holder creates the merchant's pending by key inside a longer transaction; the waiter
    names it by key too. Committed: the waiter uses that row. Rolled back: the waiter creates
    it. Never two rows, never 'do not exist'."""
    merchant = MerchantFactory()
    account_for(currency="usd", kind="provider_clearing", provider="sandbox",
                shard=clearing_key(merchant=merchant, currency="usd", provider="sandbox").shard)
    _wait_behind_a_capture(merchant, holder_ends, lambda: entry_post(
        kind="adjustment", reference_type="t", reference_id="w",
        lines=[(account_key(currency="usd", kind="fees"), -1),
               (account_key(merchant=merchant, currency="usd", kind="pending"), 1)]))
    pending = Account.objects.get(merchant=merchant, kind="pending")
    assert pending.balance == (11 if holder_ends == "commit" else 1)
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_hot_account_by_key_and_by_id_from_many_threads_never_skips_a_lock():
    """Half the threads name the hot account by instance, half by key, while every post updates
    it: a lock silently skipped would surface as 'do not exist' or a broken chain link."""
    merchant = MerchantFactory()
    flows.post_deposit_confirmed(merchant=merchant, deposit_id="dep_0", currency="usd",
                                 amount=1)
    available = Account.objects.get(merchant=merchant, kind="available")
    deposits = account_key(currency="usd", kind="deposits_clearing")

    def work(i: int) -> int:
        target = available if i % 2 else account_key(merchant=merchant, currency="usd",
                                                     kind="available")
        for n in range(25):
            entry_post(kind="deposit_confirmed", reference_type="deposit",
                       reference_id=f"dep_{i}_{n}", lines=[(deposits, -1), (target, 1)])
        return 25

    results, errors = run_threads(12, work)
    assert errors == [] and results == [25] * 12
    available.refresh_from_db()
    assert (available.balance, available.version) == (1 + 300, 1 + 300)
    assert ledger_verify().ok


# -- refund_record_external: two entries in one batch ----------------------------------------
@pytest.fixture
def captured(make_payment):
    return make_payment(amount=10_000)


def _refund_books(payment) -> dict[str, int]:
    balances = dict(Account.objects.filter(merchant=payment.merchant, currency="usd")
                    .values_list("kind", "balance"))
    return balances


@pytest.mark.django_db
def test_an_external_refund_keeps_amount_refunded_and_the_books_in_step(captured):
    from payments.services import refund_record_external

    before = _refund_books(captured)
    refund = refund_record_external(payment_id=captured.id, amount=4_000,
                                    provider_reference="ext_1")
    assert refund is not None and refund.status == "succeeded"
    captured.refresh_from_db()
    assert captured.amount_refunded == 4_000
    after = _refund_books(captured)
    assert after.get("reserved", 0) == 0
    assert after.get("available", 0) == before.get("available", 0) - 4_000
    kinds = Counter(JournalEntry.objects.filter(reference_id=refund.id)
                    .values_list("kind", flat=True))
    assert kinds == {"refund_created": 1, "refund_succeeded": 1}
    assert all(e.merchant_id == captured.merchant_id
               for e in JournalEntry.objects.filter(reference_id=refund.id))
    # Again with the same reference: the same refund, nothing new.
    again = refund_record_external(payment_id=captured.id, amount=4_000,
                                   provider_reference="ext_1")
    assert again.pk == refund.pk
    assert JournalEntry.objects.filter(reference_id=refund.id).count() == 2
    # More than what is left: a break, nothing recorded.
    assert refund_record_external(payment_id=captured.id, amount=6_001,
                                  provider_reference="ext_2") is None
    full = refund_record_external(payment_id=captured.id, amount=6_000,
                                  provider_reference="ext_3")
    captured.refresh_from_db()
    assert full is not None
    assert (captured.amount_refunded, captured.status) == (10_000, "refunded")
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_concurrent_external_refunds_never_exceed_the_captured_amount(make_payment):
    from payments.models import Payment, Refund
    from payments.services import refund_record_external

    payment = make_payment(amount=10_000)

    def work(i: int) -> str | None:
        refund = refund_record_external(payment_id=payment.id, amount=3_000,
                                        provider_reference=f"ext_{i % 5}")
        return refund.pk if refund is not None else None

    results, errors = run_threads(10, work)
    assert errors == []
    payment = Payment.objects.get(pk=payment.pk)
    refunds = Refund.objects.filter(payment=payment)
    assert refunds.count() == 3  # 3 × 3,000 fit in 10,000; the 4th reference does not
    assert payment.amount_refunded == 9_000 == sum(r.amount for r in refunds)
    assert {r for r in results if r} == set(refunds.values_list("pk", flat=True))
    assert JournalEntry.objects.filter(reference_type="refund").count() == 6
    books = _refund_books(payment)
    assert books.get("reserved", 0) == 0
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_own_mode_ctrl_c_while_the_second_round_trip_waits_commits_nothing():
    """The entry INSERT's foreign-key check waits for a merchant row another connection holds
    FOR UPDATE: Ctrl-C there cancels INSERT and the COMMIT behind it; ROLLBACK leaves nothing."""
    from core.models import Merchant

    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_0", provider="sandbox",
                       currency="usd", amount=100)
    before = counts_seen_from_outside()
    ctrl_c_while_blocked(f"SELECT id FROM {Merchant._meta.db_table} WHERE id = %s FOR UPDATE",
                         [merchant.pk], lambda: flows.post_capture(
                             merchant=merchant, payment_id="pay_1", provider="sandbox",
                             currency="usd", amount=100))
    assert_clean_autocommit()
    assert counts_seen_from_outside() == before
    flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                       currency="usd", amount=100)
    assert ledger_verify().ok
