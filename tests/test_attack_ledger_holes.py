# ruff: noqa: F811  (pytest fixtures imported from tests/test_attack_ledger.py)
"""Attacks on the ledger that got through the first version of per-account chains and
checkpoints, each seen failing before its fix: re-labelled accounts (type, owner, provider),
deleted or replayed checkpoint files, an altered database copy, offline coverage that skipped
unproven accounts, a checkpoint signed mid-verify, an irreversible migration run backwards, a
crash between file and COMMIT, and two entries of one transaction deadlocking with a third.
Helpers live in tests/ledger_tampering.py and tests/test_attack_ledger.py."""

from __future__ import annotations

import copy
import json
import shutil
import threading

import pytest
from django.db import connection

import ledger.verify as verify_module
from ledger import flows
from ledger.chain import check_merchant_coverage
from ledger.checkpoints import checkpoint_create, public_key_hex
from ledger.models import Account, Checkpoint, JournalEntry
from ledger.verify import ledger_verify
from tests.ledger_tampering import (  # noqa: F401 (export_fixture is the `export` fixture)
    as_table_owner,
    delete_with_its_effect,
    export_fixture,
    flush_deferred,
)
from tests.test_attack_ledger import (  # noqa: F401  (fixtures)
    account,
    books,
    coverage,
)


def delete_newest_with_its_effect() -> JournalEntry:
    return delete_with_its_effect(JournalEntry.objects.order_by("-sequence").first())


# -- account identity is not bound by any hash nor compared with the checkpoint's leaf ---------
@pytest.mark.django_db
def test_swapping_pending_and_available_of_one_merchant_is_caught(books, export, api):
    """pay_2's 7,000 is still pending; swapping the two rows' `kind` makes it withdrawable.
    Posting hashes name only the account id, and the checkpoint check compares only version
    and head, never the leaf's merchant/currency/code, so every check passes."""
    checkpoint_create()
    pending, available = account(books["merchant"], "pending"), account(books["merchant"],
                                                                         "available")
    before = api.get("/balance").json()["available"]
    as_table_owner(
        ("UPDATE ledger_account SET currency = 'zzz' WHERE id = %s", [pending.pk]),
        ("UPDATE ledger_account SET kind = 'pending' WHERE id = %s", [available.pk]),
        ("UPDATE ledger_account SET kind = 'available', currency = 'usd' WHERE id = %s",
         [pending.pk]))
    assert api.get("/balance").json()["available"] != before  # the money really moved
    result = ledger_verify()
    assert not result.ok, "kinds of two covered accounts swapped, yet: " + result.report()


@pytest.mark.django_db
def test_handing_an_account_and_its_postings_to_another_merchant_is_caught(books, export):
    """posting.merchant_id is not hashed and the leaf's merchant is never compared: move
    merchant A's usd `available` (with its postings) to merchant B, who had no usd account."""
    checkpoint_create()
    victim = account(books["merchant"], "available")
    thief = books["other"]
    as_table_owner(
        ("UPDATE ledger_account SET merchant_id = %s WHERE id = %s", [thief.pk, victim.pk]),
        ("UPDATE ledger_posting SET merchant_id = %s WHERE account_id = %s",
         [thief.pk, victim.pk]))
    assert books["other_api"].get("/balance").json()["available"]  # B now sees A's money
    result = ledger_verify()
    assert not result.ok, "a covered account changed owner, yet: " + result.report()


@pytest.mark.django_db
def test_moving_a_clearing_account_to_another_provider_is_caught(books, export):
    checkpoint_create()
    clearing = Account.objects.filter(kind="provider_clearing").first()
    as_table_owner(("UPDATE ledger_account SET provider = 'other' WHERE id = %s",
                    [clearing.pk]))
    result = ledger_verify()
    assert not result.ok, "a covered account's provider changed, yet: " + result.report()


# -- the checkpoint files ------------------------------------------------------------------------
@pytest.mark.django_db
def test_deleting_the_newest_checkpoint_file_while_the_database_keeps_it_is_caught(books,
                                                                                   export):
    """The database still holds signed checkpoint 2; verify judges only by file 1."""
    checkpoint_create()
    flows.post_capture(merchant=books["merchant"], payment_id="pay_late", provider="sandbox",
                       currency="usd", amount=4_000)
    flush_deferred()
    checkpoint_create()
    delete_newest_with_its_effect()  # covered by checkpoint 2 only
    sorted(export.glob("checkpoint-*.json"))[-1].unlink()
    result = ledger_verify()
    assert not result.ok, result.report()


@pytest.mark.django_db
def test_an_old_checkpoint_replayed_under_a_newer_file_name_is_caught(books, export):
    """Adding a file (all a write-once volume allows) that repeats genuine checkpoint 1 under a
    later name: the newest file name wins, its number comes from inside, and checkpoint 2's
    coverage is forgotten."""
    checkpoint_create()
    flows.post_capture(merchant=books["merchant"], payment_id="pay_late", provider="sandbox",
                       currency="usd", amount=4_000)
    flush_deferred()
    checkpoint_create()
    delete_newest_with_its_effect()
    first = sorted(export.glob("checkpoint-*.json"))[0]
    shutil.copy(first, export / "checkpoint-0000000003.json")
    result = ledger_verify()
    assert not result.ok, result.report()


@pytest.mark.django_db
def test_a_tampered_database_copy_of_the_exported_checkpoint_is_caught(books, export, api):
    """Only the signature of the database twin is compared: its heads (which the API serves as
    leaves and proofs) can be rewritten and verify stays OK while every merchant's offline
    check now fails."""
    checkpoint_create()
    as_table_owner(("UPDATE ledger_checkpoint SET heads = %s WHERE number = 1",
                    [json.dumps([[h[0], h[1], h[2], h[3], h[4], h[5], h[6] + 1]
                                 for h in _stored_heads()])]))
    proof = api.get("/ledger/checkpoint").json()
    rows = api.get("/balance_transactions?limit=100").json()["data"]
    assert check_merchant_coverage(proof, rows, public_key_hex())  # merchants see a failure
    result = ledger_verify()
    assert not result.ok, "the database copy differs from the file, yet: " + result.report()


def _stored_heads() -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT heads FROM ledger_checkpoint WHERE number = 1")
        heads = cursor.fetchone()[0]
    return json.loads(heads) if isinstance(heads, str) else heads


# -- the offline verifier ------------------------------------------------------------------------
@pytest.mark.django_db
def test_coverage_complains_when_the_proof_leaves_out_an_account_with_rewritten_rows(coverage):
    """A server that rewrote one account's history simply omits that account from the proof:
    the rows of an account without a proof are never looked at, and the result is []."""
    proof, rows = copy.deepcopy(coverage)
    target = rows[0]["chain"]["account"]
    for row in rows:
        if row["chain"]["account"] == target:
            row["amount"] += 1_000
            row["balance_after"] += 1_000
    proof["accounts"] = [item for item in proof["accounts"] if item["leaf"][0] != target]
    assert check_merchant_coverage(proof, rows, public_key_hex()), \
        "rewritten balance transactions of an account left out of the proof were accepted"


@pytest.mark.django_db
def test_coverage_complains_when_the_proof_has_no_accounts_at_all(coverage):
    proof, rows = copy.deepcopy(coverage)
    proof["accounts"] = []
    assert check_merchant_coverage(proof, rows, public_key_hex())


@pytest.mark.django_db
def test_coverage_rejects_a_balance_transaction_labelled_with_another_balance_type(coverage):
    """`balance_type` is not hashed nor compared with the leaf's code: a pending movement can be
    shown to the merchant as available and still 'verify'."""
    proof, rows = copy.deepcopy(coverage)
    row = next(r for r in rows if r["balance_type"] == "pending")
    row["balance_type"] = "available"
    assert check_merchant_coverage(proof, rows, public_key_hex())


# -- concurrency ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_checkpoint_signed_while_ledger_verify_runs_is_no_false_alarm(settings, tmp_path,
                                                                        monkeypatch):
    """ledger_verify takes its snapshot first and reads the checkpoint files last; a checkpoint
    committed in between (beat signs one every few minutes, a big verify takes longer) is read
    from its file while its database twin and the heads it signed are invisible in the
    snapshot: a tampering alarm on an untouched ledger."""
    settings.LEDGER_CHECKPOINT_DIR = str(tmp_path / "cp")
    from tests.factories import MerchantFactory

    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_a", provider="sandbox",
                       currency="usd", amount=1_000)
    checkpoint_create()
    original = verify_module._check_account_chains

    def meanwhile() -> None:
        try:
            flows.post_capture(merchant=merchant, payment_id="pay_b", provider="sandbox",
                               currency="usd", amount=2_000)
            checkpoint_create()
        finally:
            connection.close()

    threads: list[threading.Thread] = []

    def chains_then_a_checkpoint_elsewhere(result, chunk_size):  # type: ignore[no-untyped-def]
        original(result, chunk_size)
        thread = threading.Thread(target=meanwhile)
        threads.append(thread)
        thread.start()
        thread.join(timeout=3)  # it waits for this verify to finish (the checkpoint lock)

    monkeypatch.setattr(verify_module, "_check_account_chains",
                        chains_then_a_checkpoint_elsewhere)
    result = ledger_verify()
    assert result.ok, result.report()
    threads[0].join(timeout=30)
    assert not threads[0].is_alive()
    monkeypatch.undo()
    assert Checkpoint.objects.count() == 2  # signed once this verify let go
    assert ledger_verify().ok


# -- migration 0003's reverse ------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_0003_refuses_to_be_reversed_before_changing_anything():
    """Going back would need the old global chain recomputed; 0003 refuses with a clear
    message (restore the backup) before it touches a row, and the ledger still verifies."""
    from django.db.migrations.exceptions import IrreversibleError

    from tests.factories import MerchantFactory
    from tests.test_ledger_migration import BEFORE, migrate

    flows.post_capture(merchant=MerchantFactory(), payment_id="pay_r", provider="sandbox",
                       currency="usd", amount=100)
    with pytest.raises(IrreversibleError, match="Restore the database from the backup"):
        migrate(BEFORE)
    assert ledger_verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_crash_after_the_file_is_written_leaves_no_false_alarm(settings, tmp_path,
                                                                 monkeypatch):
    """checkpoint_create writes the file inside its transaction: if the COMMIT then fails (or
    the process dies), the orphan file is the newest and verify reports tampering ("database
    copy is missing") on an untouched ledger until the next checkpoint."""
    import ledger.checkpoints as checkpoints
    from tests.factories import MerchantFactory

    settings.LEDGER_CHECKPOINT_DIR = str(tmp_path / "cp")
    flows.post_capture(merchant=MerchantFactory(), payment_id="pay_x", provider="sandbox",
                       currency="usd", amount=100)
    original = checkpoints._write_file

    def write_then_crash(folder, document):  # type: ignore[no-untyped-def]
        original(folder, document)
        raise OSError("the process died before COMMIT")

    monkeypatch.setattr(checkpoints, "_write_file", write_then_crash)
    with pytest.raises(OSError):
        checkpoint_create()
    result = ledger_verify()
    assert result.ok, result.report()


@pytest.mark.django_db(transaction=True)
def test_an_external_refunds_two_entries_do_not_deadlock_with_another_refund():
    """refund_record_external posts refund_created (available, reserved) and refund_succeeded
    (reserved, clearing) in ONE transaction. Posted one after the other, the second locks the
    clearing shard (a lower id) while holding reserved, and a concurrent refund_succeeded of the
    same merchant (clearing, then reserved) deadlocks with it. `post_refund_recorded` posts both
    in one batch: every account locked up front, in one order."""
    import time

    from django.db import transaction

    from tests.factories import MerchantFactory

    merchant = MerchantFactory()
    common = {"merchant": merchant, "currency": "usd"}
    flows.post_capture(payment_id="pay_1", provider="sandbox", amount=10_000, **common)
    flows.post_settlement(payment_id="pay_1", amount=10_000, fee=0, **common)
    flows.post_refund_created(refund_id="re_0", payment_id="pay_1", amount=500, **common)
    first_done, errors, pids = threading.Event(), [], {}

    def external_refund() -> None:
        try:
            with transaction.atomic():
                flows.post_refund_recorded(refund_id="re_1", payment_id="pay_1",
                                           provider="sandbox", amount=1_000, **common)
                first_done.set()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not _waiting_on_a_lock(pids.get("other")):
                    time.sleep(0.01)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def other_refund() -> None:
        try:
            first_done.wait(10)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids["other"] = cursor.fetchone()[0]
            flows.post_refund_succeeded(refund_id="re_0", payment_id="pay_1",
                                        provider="sandbox", amount=500, **common)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=external_refund), threading.Thread(target=other_refund)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledger_verify().ok


def _waiting_on_a_lock(pid: int | None) -> bool:
    if pid is None:
        return False
    from django.db import connections

    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # we poll inside a transaction
        cursor.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                       [pid])
        row = cursor.fetchone()
    return bool(row and row[0])
