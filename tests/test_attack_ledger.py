"""The ledger's tamper evidence under attack: a table owner who rewrites covered rows and
recomputes every hash after them, a hostile merchant at the checkpoint endpoint, an auditor's
offline checks, and concurrent posting and checkpointing. Each test here is a property that
holds; the helpers are shared with the attacks that still get through."""

from __future__ import annotations

import base64
import copy
import json
from itertools import pairwise

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import flows
from ledger.chain import (
    body_digest,
    canonical,
    check_checkpoint,
    check_merchant_coverage,
    key_id,
)
from ledger.checkpoints import checkpoint_create, public_key_hex
from ledger.models import Account, Checkpoint, JournalEntry
from ledger.services import EntrySpec, account_for, entries_post, entry_post
from ledger.verify import ledger_verify
from tests.conftest import Api
from tests.factories import MerchantFactory, merchant_with_key
from tests.ledger_tampering import (  # noqa: F401 (export_fixture is the `export` fixture)
    as_table_owner,
    export_fixture,
    flush_deferred,
    rechain_everything,
)
from tests.threads import run_threads


# -- helpers -----------------------------------------------------------------------------------
@pytest.fixture
def books(merchant):
    """Two merchants' activity: settled and unsettled captures, a refund, a deposit."""
    other, other_key = merchant_with_key()
    common = {"merchant": merchant, "currency": "usd"}
    flows.post_capture(payment_id="pay_1", provider="sandbox", amount=10_000, **common)
    flows.post_settlement(payment_id="pay_1", amount=10_000, fee=320, **common)
    flows.post_capture(payment_id="pay_2", provider="sandbox", amount=7_000, **common)
    flows.post_refund_created(refund_id="re_1", payment_id="pay_1", amount=1_000, **common)
    flows.post_deposit_confirmed(deposit_id="dep_1", amount=2_000, **common)
    flows.post_capture(merchant=other, payment_id="pay_9", provider="sandbox", currency="eur",
                       amount=5_000)
    flush_deferred()
    return {"merchant": merchant, "other": other, "other_api": Api(other_key),
            "entries": list(JournalEntry.objects.order_by("sequence"))}


def account(merchant, kind: str, currency: str = "usd") -> Account:
    return Account.objects.get(merchant=merchant, kind=kind, currency=currency)


def checks_failed() -> list[str]:
    return [problem.check for problem in ledger_verify().problems]


# -- a table owner rewriting covered history, then recomputing everything --------------------
def _delete_an_old_entry(books: dict) -> None:
    victim = books["entries"][2]  # pay_2's capture: not the newest
    as_table_owner(("DELETE FROM ledger_posting WHERE entry_id = %s", [victim.id]),
                   ("DELETE FROM ledger_journalentry WHERE id = %s", [victim.id]))


def _move_a_fee_to_the_merchant(books: dict) -> None:
    settlement = books["entries"][1]
    fees = Account.objects.get(kind="fees", currency="usd")
    available = account(books["merchant"], "available")
    as_table_owner(
        ("UPDATE ledger_posting SET amount = amount - 100 WHERE entry_id = %s AND account_id = %s",
         [settlement.id, fees.pk]),
        ("UPDATE ledger_posting SET amount = amount + 100 WHERE entry_id = %s AND account_id = %s",
         [settlement.id, available.pk]))


def _move_money_between_two_accounts_of_the_merchant(books: dict) -> None:
    capture = books["entries"][2]  # pay_2: clearing → pending; make it clearing → available
    pending, available = account(books["merchant"], "pending"), account(books["merchant"],
                                                                         "available")
    as_table_owner(("UPDATE ledger_posting SET account_id = %s, account_version = 500000 "
                    "WHERE entry_id = %s AND account_id = %s",
                    [available.pk, capture.id, pending.pk]))


def _reorder_two_postings_of_an_account(books: dict) -> None:
    first = books["entries"][0]  # pay_1's capture moves after pay_2's on `pending`
    as_table_owner(
        ("UPDATE ledger_posting SET created_at = created_at + interval '1 hour' "
         "WHERE entry_id = %s", [first.id]),
    )


def _insert_an_entry_in_the_past(books: dict) -> None:
    fees = Account.objects.get(kind="fees", currency="usd")
    available = account(books["merchant"], "available")
    when = books["entries"][1].created_at
    as_table_owner(
        ("INSERT INTO ledger_journalentry (id, sequence, kind, description, reference_type, "
         "reference_id, merchant_id, created_at, hash) VALUES ('txn_forged', 999999, "
         "'adjustment', '', 'adjustment', 'adj_1', %s, %s, %s)",
         [books["merchant"].pk, when, "0" * 64]),
        ("INSERT INTO ledger_posting (id, entry_id, account_id, merchant_id, amount, currency, "
         "balance_after, created_at, account_version, prev_hash, hash) VALUES "
         "('bt_forged1', 'txn_forged', %s, NULL, -5000, 'usd', 0, %s, 900000, %s, %s), "
         "('bt_forged2', 'txn_forged', %s, %s, 5000, 'usd', 0, %s, 900000, %s, %s)",
         [fees.pk, when, "0" * 64, "0" * 64, available.pk, books["merchant"].pk, when, "0" * 64,
          "0" * 64]))


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", [
    _delete_an_old_entry, _move_a_fee_to_the_merchant,
    _move_money_between_two_accounts_of_the_merchant, _reorder_two_postings_of_an_account,
    _insert_an_entry_in_the_past,
], ids=lambda tamper: tamper.__name__.strip("_"))
def test_a_covered_rewrite_with_every_hash_recomputed_is_caught_by_the_checkpoint(
        books, export, tamper):
    checkpoint_create()
    tamper(books)
    rechain_everything()
    # The rewrite is internally perfect: only the signed checkpoint can tell.
    assert checks_failed() == ["checkpoint"], ledger_verify().report()
    assert "entries it covered were deleted or rewritten" in ledger_verify().report()


@pytest.mark.django_db
def test_the_rechain_helper_changes_nothing_on_an_untouched_ledger(books, export):
    """The attacks above are only meaningful if the recomputation itself is exact."""
    checkpoint_create()
    rechain_everything()
    assert ledger_verify().ok, ledger_verify().report()


@pytest.mark.django_db
def test_deleting_a_covered_account_and_its_postings_is_caught(books, export):
    checkpoint_create()
    victim = account(books["other"], "pending", "eur")
    as_table_owner(("DELETE FROM ledger_posting WHERE account_id = %s", [victim.pk]),
                   ("DELETE FROM ledger_account WHERE id = %s", [victim.pk]))
    assert "checkpoint" in checks_failed()


@pytest.mark.django_db
def test_deleting_only_the_database_checkpoint_rows_is_noted_and_the_files_still_judge(
        books, export):
    """A file without its database row is also what a crash between the file and COMMIT leaves,
    so it is a note, not a failure; what the file covered is still checked against the rows."""
    checkpoint_create()
    flows.post_capture(merchant=books["merchant"], payment_id="pay_3", provider="sandbox",
                       currency="usd", amount=500)
    checkpoint_create()
    as_table_owner(("DELETE FROM ledger_checkpoint WHERE number = 2", []))
    result = ledger_verify()
    assert result.ok and "checkpoint 2 is exported but not in the database" in result.report()
    newest = JournalEntry.objects.get(reference_id="pay_3")
    as_table_owner(("UPDATE ledger_journalentry SET description = 'x' WHERE id = %s",
                    [newest.id]))
    rechain_everything()
    assert "(rewritten)" in ledger_verify().report()


@pytest.mark.django_db
def test_a_newest_checkpoint_file_whose_signature_has_a_spoofed_key_id_is_refused(books, export):
    checkpoint_create()
    path = sorted(export.glob("checkpoint-*.json"))[-1]
    document = json.loads(path.read_text())
    attacker = Ed25519PrivateKey.generate()
    document["body"]["accounts"] = 0
    document["body"]["key_id"] = key_id(bytes.fromhex(public_key_hex()))
    document["signature"] = base64.b64encode(
        attacker.sign(canonical(document["body"]))).decode()
    path.write_text(json.dumps(document))
    assert "signature does not verify" in ledger_verify().report()
    assert check_checkpoint(document, public_key_hex())


@pytest.mark.django_db
def test_a_replaced_previous_checkpoint_file_breaks_the_link(books, export):
    checkpoint_create()
    checkpoint_create()
    first, second = sorted(export.glob("checkpoint-*.json"))
    forged = json.loads(second.read_text())
    forged["body"]["number"] = 1  # another genuine body where checkpoint 1 was
    first.write_text(json.dumps(forged))
    assert "does not link to checkpoint 1" in ledger_verify().report()


# -- the checkpoint endpoint and balance transactions, as a hostile merchant ------------------
@pytest.mark.django_db
def test_the_checkpoint_endpoint_shows_a_merchant_only_its_own_leaves(books, api):
    checkpoint_create()
    mine = api.get("/ledger/checkpoint").json()
    assert {leaf["leaf"][1] for leaf in mine["accounts"]} == {books["merchant"].pk}
    serialised = json.dumps(books["other_api"].get("/ledger/checkpoint").json())
    assert books["merchant"].pk not in serialised
    for item in mine["accounts"]:
        assert str(books["other"].pk) not in json.dumps(item)


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["?number=1", "?merchant=x", "?limit=-1", "?%00=%ff",
                                   "?starting_after=" + "9" * 5000])
def test_the_checkpoint_endpoint_never_answers_5xx_to_odd_queries(books, api, query):
    checkpoint_create()
    assert api.get("/ledger/checkpoint" + query).status_code < 500


@pytest.mark.django_db
def test_the_checkpoint_endpoint_refuses_writes_and_anonymous_callers(books, api):
    checkpoint_create()
    assert api.post("/ledger/checkpoint", {}).status_code == 405
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/ledger/checkpoint").status_code == 401


@pytest.mark.django_db
def test_another_merchants_balance_transaction_is_404_with_no_chain(books, api):
    theirs = books["other_api"].get("/balance_transactions").json()["data"]
    assert theirs
    response = api.get(f"/balance_transactions/{theirs[0]['id']}")
    assert response.status_code == 404 and "chain" not in response.json()


# -- the offline verifier, as an auditor ---------------------------------------------------------
@pytest.fixture
def coverage(books, api):
    checkpoint_create()
    return api.get("/ledger/checkpoint").json(), api.get("/balance_transactions?limit=100").json()[
        "data"]


@pytest.mark.django_db
def test_coverage_accepts_the_genuine_proof_in_any_row_order(coverage):
    proof, rows = coverage
    assert check_merchant_coverage(proof, rows, public_key_hex()) == []
    assert check_merchant_coverage(proof, list(reversed(rows)), public_key_hex()) == []


@pytest.mark.django_db
@pytest.mark.parametrize("edit", ["duplicate", "omit", "swap_versions", "other_size",
                                  "other_index", "spoofed_key", "amount"])
def test_coverage_rejects_altered_proofs_or_rows(coverage, edit):
    proof, rows = copy.deepcopy(coverage)
    key = public_key_hex()
    if edit == "duplicate":
        rows.append(copy.deepcopy(rows[0]))
    elif edit == "omit":
        rows = rows[1:]
    elif edit == "swap_versions":
        same = [r for r in rows if r["chain"]["account"] == rows[0]["chain"]["account"]]
        assert len(same) >= 2
        same[0]["chain"]["version"], same[1]["chain"]["version"] = (
            same[1]["chain"]["version"], same[0]["chain"]["version"])
    elif edit == "other_size":
        proof["body"]["accounts"] += 1
    elif edit == "other_index":
        proof["accounts"][0]["index"] = (proof["accounts"][0]["index"] + 1) % \
            proof["body"]["accounts"]
    elif edit == "spoofed_key":
        attacker = Ed25519PrivateKey.generate()
        proof["signature"] = base64.b64encode(
            attacker.sign(canonical(proof["body"]))).decode()
    elif edit == "amount":
        rows[-1]["amount"] += 1
        rows[-1]["balance_after"] += 1
    assert check_merchant_coverage(proof, rows, key)


@pytest.mark.django_db
def test_coverage_refuses_another_merchants_leaf_claimed_for_my_rows(books, coverage):
    proof, rows = copy.deepcopy(coverage)
    theirs = books["other_api"].get("/ledger/checkpoint").json()["accounts"][0]
    mine = proof["accounts"][0]
    forged = dict(theirs, leaf=[mine["leaf"][0], *theirs["leaf"][1:]])
    proof["accounts"][0] = forged
    assert check_merchant_coverage(proof, rows, public_key_hex())


# -- concurrency ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_and_batches_on_overlapping_accounts_keep_every_chain(settings,
                                                                               tmp_path):
    settings.LEDGER_CHECKPOINT_DIR = str(tmp_path / "cp")
    # One merchant's accounts and the platform's: an entry moves one merchant's balances at most.
    merchant = MerchantFactory()
    accounts = [account_for(merchant=merchant, currency="usd", kind=k)
                for k in ("pending", "disputed")]
    accounts += [account_for(currency="usd", kind=k) for k in ("fees", "payouts_in_transit",
                                                               "deposits_clearing")]
    rounds = 15

    def work(i: int) -> None:
        import random

        rng = random.Random(i)
        for n in range(rounds):
            if i == 0:
                checkpoint_create()
                continue
            picks = rng.sample(accounts, 3)
            if n % 2:
                entry_post(kind="adjustment", lines=[(picks[0], 7), (picks[1], -7)],
                           reference_type="adjustment", reference_id=f"a{i}-{n}")
            else:
                entries_post([
                    EntrySpec("adjustment", [(picks[0], 3), (picks[1], -3)], "adjustment",
                              f"b{i}-{n}-1"),
                    EntrySpec("adjustment", [(picks[1], 5), (picks[2], -5)], "adjustment",
                              f"b{i}-{n}-2"),
                ])

    _, errors = run_threads(6, work)
    assert errors == []
    checkpoint_create()
    result = ledger_verify()
    assert result.ok, result.report()
    rows = list(Checkpoint.objects.order_by("number"))
    assert [row.number for row in rows] == list(range(1, len(rows) + 1))
    for before, after in pairwise(rows):
        assert after.body["previous"] == body_digest(before.body)
    for row in rows:  # every signed snapshot is a consistent cut: the trial balance is zero
        assert sum(head[6] for head in row.heads) == 0, row.number


@pytest.mark.django_db(transaction=True)
def test_two_checkpoints_at_once_get_consecutive_linked_numbers(settings, tmp_path):
    settings.LEDGER_CHECKPOINT_DIR = str(tmp_path / "cp")
    merchant = MerchantFactory()
    flows.post_capture(merchant=merchant, payment_id="pay_c", provider="sandbox",
                       currency="usd", amount=100)
    _, errors = run_threads(4, lambda i: checkpoint_create())
    assert errors == []
    rows = list(Checkpoint.objects.order_by("number"))
    assert [row.number for row in rows] == [1, 2, 3, 4]
    assert all(b.body["previous"] == body_digest(a.body) for a, b in pairwise(rows))
    assert ledger_verify().ok
