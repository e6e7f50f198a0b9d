"""Signed checkpoints: what a table owner can do unseen by the hash chains alone (delete the newest
entry with its balance effect, or rewrite it and recompute every hash) is caught against the
latest checkpoint; the standalone verifier (ledger/chain.py, copied alone) accepts a genuine
checkpoint and rejects a forged one, and proves a merchant's balance transactions covered."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command

from ledger.chain import (
    EntryLine,
    body_digest,
    canonical,
    check_checkpoint,
    check_merchant_coverage,
    entry_digest,
    micros,
    posting_hash,
)
from ledger.checkpoints import checkpoint_create, public_key_hex
from ledger.models import Checkpoint, JournalEntry
from ledger.verify import ledger_verify
from tests.ledger_tampering import (  # noqa: F401 (export_fixture is the `export` fixture)
    as_table_owner,
    delete_with_its_effect,
    export_fixture,
    flush_deferred,
    post_books,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ledger(merchant):
    post_books(merchant, refund_succeeds=False, dispute=False, payout=False)
    flush_deferred()
    return list(JournalEntry.objects.order_by("sequence"))


def rewrite_with_recomputed_hashes(entry: JournalEntry, description: str) -> None:
    postings = list(entry.postings.order_by("account_id"))
    digest = entry_digest(
        entry_id=entry.id, kind=entry.kind, reference_type=entry.reference_type,
        reference_id=entry.reference_id, merchant_id=entry.merchant_id, description=description,
        created_at=entry.created_at,
        lines=[EntryLine(p.id, p.account_id, p.amount, p.currency) for p in postings])
    statements = [("UPDATE ledger_journalentry SET description = %s, hash = %s WHERE id = %s",
                   [description, digest, entry.id])]
    for p in postings:
        account = p.account
        link = posting_hash(prev_hash=p.prev_hash, account_id=p.account_id,
                            owner=account.merchant_id or "", label=account.label,
                            account_version=p.account_version, posting_id=p.id,
                            entry_id=entry.id, entry_hash=digest, amount=p.amount,
                            currency=p.currency, balance_after=p.balance_after,
                            created_at_us=micros(p.created_at))
        statements += [("UPDATE ledger_posting SET hash = %s WHERE id = %s", [link, p.id]),
                       ("UPDATE ledger_account SET head_hash = %s WHERE id = %s",
                        [link, p.account_id])]
    as_table_owner(*statements)


@pytest.mark.django_db
def test_a_checkpoint_is_signed_stored_and_exported_and_verify_names_it(ledger, export):
    checkpoint = checkpoint_create()
    assert checkpoint.number == 1
    files = sorted(export.glob("checkpoint-*.json"))
    assert [f.name for f in files] == ["checkpoint-0000000001.json"]
    document = json.loads(files[0].read_text())
    assert document["body"] == checkpoint.body
    assert check_checkpoint(document, public_key_hex()) == []
    result = ledger_verify()
    assert result.ok, result.report()
    assert "checkpoint 1 of" in result.report()
    second = checkpoint_create()
    assert second.body["previous"] == body_digest(checkpoint.body)


@pytest.mark.django_db
def test_deleting_the_newest_entry_with_its_effect_is_caught_only_against_a_checkpoint(ledger,
                                                                                    export):
    newest = ledger[-1]
    checkpoint_create()
    delete_with_its_effect(newest)
    result = ledger_verify()
    report = result.report()
    # Every internal check passes: sums, balances, balance_after, digests, chains…
    assert [p.check for p in result.problems] == ["checkpoint"], report
    # …but the checkpoint signed heads that are no longer there.
    assert "(truncated)" in report and "entries it covered were deleted or rewritten" in report


@pytest.mark.django_db
def test_without_a_checkpoint_that_deletion_is_invisible(ledger):
    """The limit the checkpoint exists for, pinned so nobody believes the chains alone catch it."""
    delete_with_its_effect(ledger[-1])
    assert ledger_verify().ok


@pytest.mark.django_db
def test_rewriting_the_newest_entry_with_recomputed_hashes_is_caught(ledger, export):
    checkpoint_create()
    rewrite_with_recomputed_hashes(ledger[-1], "nothing to see here")
    result = ledger_verify()
    assert [p.check for p in result.problems] == ["checkpoint"], result.report()
    assert "(rewritten)" in result.report()


@pytest.mark.django_db
def test_deleting_the_database_copy_of_the_checkpoint_leaves_the_exported_file_to_judge(ledger,
                                                                                      export):
    checkpoint_create()
    rewrite_with_recomputed_hashes(ledger[-1], "covered up")
    as_table_owner(("DELETE FROM ledger_checkpoint", []))
    report = ledger_verify().report()
    assert "(rewritten)" in report  # the file still judges the rows


@pytest.mark.django_db
def test_a_checkpoint_signed_with_another_key_is_refused(ledger, export):
    checkpoint_create()
    path = sorted(export.glob("checkpoint-*.json"))[-1]
    document = json.loads(path.read_text())
    document["body"]["root"] = "0" * 64
    document["signature"] = base64.b64encode(
        Ed25519PrivateKey.generate().sign(canonical(document["body"]))).decode()
    path.write_text(json.dumps(document))
    report = ledger_verify().report()
    assert "signature does not verify" in report


@pytest.mark.django_db
def test_checkpoints_are_immutable_in_the_database(ledger):
    checkpoint_create()
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        Checkpoint.objects.update(signature="x")


def run_standalone(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """ledger/chain.py copied alone into an empty folder: no Django, no project on the path."""
    alone = tmp_path / "auditor"
    alone.mkdir(exist_ok=True)
    shutil.copy(ROOT / "ledger" / "chain.py", alone / "chain.py")
    return subprocess.run([sys.executable, "-I", str(alone / "chain.py"), *args], cwd=alone,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.django_db
def test_the_offline_verifier_accepts_a_genuine_checkpoint_and_rejects_a_forged_one(
        ledger, export, tmp_path):
    checkpoint_create()
    genuine = sorted(export.glob("checkpoint-*.json"))[-1]
    ok = run_standalone(tmp_path, str(genuine), "--public-key", public_key_hex())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "checkpoint 1 of" in ok.stdout and ": OK" in ok.stdout

    document = json.loads(genuine.read_text())
    document["body"]["accounts"] += 1  # a claim the key never signed
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    bad = run_standalone(tmp_path, str(forged), "--public-key", public_key_hex())
    assert bad.returncode == 1 and "forged or altered" in bad.stdout

    other_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    wrong = run_standalone(tmp_path, str(genuine), "--public-key", other_key)
    assert wrong.returncode == 1


@pytest.mark.django_db
def test_a_merchant_proves_offline_that_its_balance_transactions_are_covered(
        ledger, api, tmp_path):
    assert api.get("/ledger/checkpoint").status_code == 404  # none signed yet
    call_command("ledger_checkpoint")
    proof = api.get("/ledger/checkpoint").json()
    assert proof["object"] == "ledger_checkpoint" and proof["accounts"]
    assert proof["public_key"] == public_key_hex()
    rows = api.get("/balance_transactions?limit=100").json()["data"]
    assert check_merchant_coverage(proof, rows, public_key_hex()) == []
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "bts.json").write_text(json.dumps({"data": rows}))
    ok = run_standalone(tmp_path, str(tmp_path / "proof.json"), "--public-key",
                        public_key_hex(), "--balance-transactions", str(tmp_path / "bts.json"))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    rows[0]["amount"] += 1  # what a rewritten ledger would now show the merchant
    problems = check_merchant_coverage(proof, rows, public_key_hex())
    assert problems and "does not match its hash" in problems[0]
    assert check_merchant_coverage(proof, rows[1:], public_key_hex())  # one left out


@pytest.mark.django_db
def test_the_proof_lists_only_the_merchants_own_accounts(ledger, api, other_api):
    checkpoint_create()
    mine = {leaf["leaf"][1] for leaf in api.get("/ledger/checkpoint").json()["accounts"]}
    theirs = other_api.get("/ledger/checkpoint").json()["accounts"]
    assert len(mine) == 1 and theirs == []
