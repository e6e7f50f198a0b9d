"""ledger_verify: clean on a good ledger; names the first bad row of anything edited behind it.
Tampering that recomputes every hash is caught only against a signed checkpoint
(tests/test_ledger_checkpoints.py)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ledger.chain import EntryLine, entry_digest
from ledger.models import Account, JournalEntry
from ledger.verify import ledger_verify
from tests.ledger_tampering import as_table_owner, flush_deferred, post_books


@pytest.fixture
def ledger(merchant):
    """A small real ledger: capture, settlement with fee, refund, dispute, deposit, payout."""
    post_books(merchant)
    flush_deferred()
    return list(JournalEntry.objects.order_by("sequence"))


def tamper(sql: str, params: list | None = None) -> None:
    """Edit behind the triggers' back, as someone with superuser rights could."""
    as_table_owner((sql, params or []))


def verify_fails() -> str:
    with pytest.raises(CommandError) as failure:
        call_command("ledger_verify")
    assert failure.value.returncode == 1
    return str(failure.value)


@pytest.mark.django_db
def test_clean_ledger_verifies_ok(ledger):
    out = StringIO()
    call_command("ledger_verify", stdout=out)
    assert "7 entries, 15 postings" in out.getvalue()
    assert "OK" in out.getvalue()


@pytest.mark.django_db
def test_verify_streams_in_chunks_smaller_than_an_entry(ledger):
    result = ledger_verify(chunk_size=1)
    assert result.ok, result.report()
    assert (result.entries, result.postings) == (7, 15)


@pytest.mark.django_db
def test_empty_ledger_verifies_ok():
    assert ledger_verify().ok


@pytest.mark.django_db
def test_balance_edited_with_triggers_disabled_is_caught(ledger, merchant):
    available = Account.objects.get(merchant=merchant, kind="available", currency="usd")
    tamper("UPDATE ledger_account SET balance = balance + 100 WHERE id = %s", [available.pk])
    report = verify_fails()
    assert f"[account_balance] account {available.pk} ({merchant.id} available usd)" in report
    assert "[trial_balance] currency usd" in report
    assert "account_chain" not in report  # the entries themselves are intact
    assert "entry_digest" not in report


@pytest.mark.django_db
def test_posting_amount_edited_with_triggers_disabled_is_caught(ledger):
    settlement = ledger[1]
    posting = settlement.postings.get(account__kind="fees")
    tamper("UPDATE ledger_posting SET amount = amount - 1 WHERE id = %s", [posting.id])
    report = verify_fails()
    row = f"journal entry {settlement.id} (sequence {settlement.sequence})"
    assert f"[zero_sum] {row}: usd postings sum to -1" in report
    assert f"[entry_digest] {row}: stored hash" in report
    assert f"[account_chain] posting {posting.id}" in report
    assert f"[account_balance] account {posting.account_id}" in report
    assert f"[balance_after] posting {posting.id}" in report


@pytest.mark.django_db
def test_balance_after_edited_is_caught(ledger):
    posting = ledger[2].postings.first()
    tamper("UPDATE ledger_posting SET balance_after = balance_after + 5 WHERE id = %s",
           [posting.id])
    report = verify_fails()
    assert f"[balance_after] posting {posting.id}" in report
    assert f"[account_chain] posting {posting.id}" in report


@pytest.mark.django_db
def test_entry_hash_edited_is_caught(ledger):
    target = ledger[3]
    tamper("UPDATE ledger_journalentry SET hash = repeat('a', 64) WHERE id = %s", [target.id])
    report = verify_fails()
    assert f"[entry_digest] journal entry {target.id} (sequence {target.sequence})" in report
    # Every posting of the entry names its digest, so its accounts' chains break too.
    assert "[account_chain] posting" in report


@pytest.mark.django_db
def test_rewritten_entry_with_a_recomputed_digest_breaks_its_postings_chain_links(ledger):
    target = ledger[3]
    forged = entry_digest(
        entry_id=target.id, kind=target.kind, reference_type=target.reference_type,
        reference_id=target.reference_id, merchant_id=target.merchant_id,
        description="nothing to see here", created_at=target.created_at,
        lines=[EntryLine(p.id, p.account_id, p.amount, p.currency)
               for p in target.postings.all()],
    )
    tamper("UPDATE ledger_journalentry SET description = 'nothing to see here', hash = %s "
           "WHERE id = %s", [forged, target.id])
    report = verify_fails()
    first = target.postings.order_by("account_id").first()
    assert "entry_digest" not in report  # the digest itself was recomputed
    assert f"[account_chain] posting {first.id} (account {first.account_id}" in report


@pytest.mark.django_db
def test_deleted_entry_is_caught(ledger, merchant):
    gone = ledger[5]  # the deposit: deposits_clearing → available
    available = gone.postings.get(account__kind="available")
    tamper("DELETE FROM ledger_posting WHERE entry_id = %s", [gone.id])
    tamper("DELETE FROM ledger_journalentry WHERE id = %s", [gone.id])
    report = verify_fails()
    assert "[account_balance]" in report
    # The payout after it on the same available account no longer links to its predecessor.
    assert (f"[balance_after] posting {ledger[6].postings.get(account__kind='available').id} "
            f"(account {available.account_id}, version {available.account_version + 1}): "
            f"is the account's posting number {available.account_version}") in report


@pytest.mark.django_db
def test_entry_left_with_one_posting_is_caught(ledger):
    capture = ledger[0]
    posting = capture.postings.first()
    tamper("DELETE FROM ledger_posting WHERE id = %s", [posting.id])
    report = verify_fails()
    assert (f"[postings_per_entry] journal entry {capture.id} (sequence {capture.sequence}): "
            "has 1") in report
