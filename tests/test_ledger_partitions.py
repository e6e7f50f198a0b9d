"""Ledger postings partitioned by month: every money rule still refuses in PostgreSQL (a second
posting for an (account, version) or an (entry, account), in the same month or another), the
ledger verifies and checkpoints, months are created ahead but never detached, and the migration
keeps a ledger that already has postings verifiable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, transaction

from core import partitions
from ledger import flows
from ledger.checkpoints import checkpoint_create
from ledger.models import Account, Posting
from ledger.verify import ledger_verify
from tests.factories import MerchantFactory
from tests.schema_history import migrated_back, relkind

TABLE = "ledger_posting"
_INSERT = ("INSERT INTO ledger_posting (id, entry_id, account_id, merchant_id, amount, currency, "
           "balance_after, created_at, account_version, prev_hash, hash) "
           "VALUES (%s, %s, %s, %s, %s, 'usd', %s, %s, %s, %s, %s)")


def _capture(merchant, payment_id: str = "pay_1"):  # type: ignore[no-untyped-def]
    entry = flows.post_capture(merchant=merchant, payment_id=payment_id, provider="sandbox",
                               currency="usd", amount=10_000)
    pending = Posting.objects.get(entry=entry, merchant=merchant)
    return entry, pending


def _insert(**values) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_INSERT, [values[k] for k in (
            "id", "entry_id", "account_id", "merchant_id", "amount", "balance_after",
            "created_at", "account_version", "prev_hash", "hash")])
        cursor.execute("SET CONSTRAINTS ledger_posting_entry_time IMMEDIATE")


@pytest.mark.django_db
def test_postings_are_partitioned_with_the_coming_months():
    assert relkind(TABLE) == "p"
    this_month = datetime.now(tz=UTC).date().replace(day=1)
    months = [p.month for p in partitions.partitions_list(TABLE) if p.month]
    assert this_month in months and len([m for m in months if m >= this_month]) >= 4
    assert (TABLE, "created_at") in partitions.partitioned_tables()


@pytest.mark.django_db
@pytest.mark.parametrize("month_later", [False, True], ids=["same month", "another month"])
def test_a_second_posting_for_an_account_version_is_refused(merchant, month_later):
    _, posting = _capture(merchant)
    other, _ = _capture(merchant, "pay_2")
    when = posting.created_at + (timedelta(days=40) if month_later else timedelta(0))
    with pytest.raises(DatabaseError, match="chain link"):
        _insert(id="bt_dup", entry_id=other.id, account_id=posting.account_id,
                merchant_id=merchant.pk, amount=1, balance_after=posting.balance_after + 1,
                created_at=when, account_version=posting.account_version,
                prev_hash=posting.prev_hash, hash="f" * 64)


@pytest.mark.django_db
def test_a_second_posting_of_an_entry_on_one_account_is_refused_in_its_partition(merchant):
    entry, posting = _capture(merchant)
    account = Account.objects.get(pk=posting.account_id)
    duplicate = r"duplicate key(.|\n)*\(entry_id, account_id, created_at\)"
    with pytest.raises(DatabaseError, match=duplicate):
        _insert(id="bt_dup", entry_id=entry.id, account_id=account.pk, merchant_id=merchant.pk,
                amount=1, balance_after=account.balance + 1, created_at=entry.created_at,
                account_version=account.version + 1, prev_hash=account.head_hash, hash="f" * 64)


@pytest.mark.django_db
def test_a_posting_dated_away_from_its_entry_is_refused(merchant):
    """Which keeps an entry's postings in one partition, where (entry, account) is unique."""
    entry, posting = _capture(merchant)
    account = Account.objects.get(pk=posting.account_id)
    with pytest.raises(DatabaseError, match="differs from its entry"):
        _insert(id="bt_later", entry_id=entry.id, account_id=account.pk, merchant_id=merchant.pk,
                amount=1, balance_after=account.balance + 1,
                created_at=entry.created_at + timedelta(days=40),
                account_version=account.version + 1, prev_hash=account.head_hash, hash="f" * 64)


@pytest.mark.django_db
def test_ledger_months_are_never_detached(merchant):
    _capture(merchant)
    with pytest.raises(ValueError, match="may not be detached"):
        partitions.month_detach(TABLE, datetime.now(tz=UTC).date())


def _settle_and_verify(merchant) -> None:  # type: ignore[no-untyped-def]
    """pay_1's settlement, a checkpoint, and the whole ledger verified: five postings."""
    flows.post_settlement(merchant=merchant, payment_id="pay_1", currency="usd", amount=10_000,
                          fee=300)
    checkpoint_create()
    result = ledger_verify()
    assert result.ok, result.report()
    assert result.postings == 5


@pytest.mark.django_db
def test_the_ledger_verifies_and_checkpoints_on_partitions(merchant, settings, tmp_path):
    settings.LEDGER_CHECKPOINT_DIR = str(tmp_path)
    _capture(merchant)
    _settle_and_verify(merchant)


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_an_existing_ledger_verifiable():
    merchant = MerchantFactory()
    with migrated_back([("ledger", "0003_account_chains")]):
        assert relkind(TABLE) == "r"
        _capture(merchant)
        checkpoint_create()

    result = ledger_verify()
    assert result.ok, result.report()
    assert relkind(TABLE) == "p"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ledger_posting_default")
        assert cursor.fetchone()[0] == 0
    _settle_and_verify(merchant)
