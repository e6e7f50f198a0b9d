"""Attacks on the month-partitioned ledger_posting (ledger 0004) as a table owner or operator:
a posting id reused at another time, changes and removals through a partition child (created
by the job or attached by hand), detached/truncated months and attached forged rows must be
refused or make ledger_verify fail."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from core import ids, partitions
from ledger import flows
from ledger.models import Posting
from ledger.verify import ledger_verify

TABLE = "ledger_posting"


def _capture(merchant, payment_id: str):  # type: ignore[no-untyped-def]
    """A capture whose COMMIT-time checks have run, as if committed before the attack."""
    entry = flows.post_capture(merchant=merchant, payment_id=payment_id, provider="sandbox",
                               currency="usd", amount=10_000)
    _sql("SET CONSTRAINTS ALL IMMEDIATE")
    return entry


def _this_month() -> str:
    return partitions.partition_name(TABLE, datetime.now(tz=UTC).date())


def _sql(statement: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)


@pytest.mark.django_db
def test_a_posting_id_cannot_be_reused_by_a_later_posting(merchant, monkeypatch):
    """The primary key is (id, created_at) now; the id alone must stay unique. (Constraints
    stay deferred here: an IMMEDIATE entry check would fire before the postings' INSERT.)"""
    first = flows.post_capture(merchant=merchant, payment_id="pay_1", provider="sandbox",
                               currency="usd", amount=10_000)
    taken = iter(sorted(Posting.objects.filter(entry=first).values_list("id", flat=True)))
    real = ids.IdGenerator.__call__
    monkeypatch.setattr(ids.IdGenerator, "__call__",
                        lambda self: next(taken) if self.prefix == "bt" else real(self))
    with pytest.raises(IntegrityError, match="id already taken"):
        flows.post_capture(merchant=merchant, payment_id="pay_2", provider="sandbox",
                           currency="usd", amount=10_000)
    assert Posting.objects.count() == Posting.objects.values("id").distinct().count()


@pytest.mark.django_db
@pytest.mark.parametrize("statement", [
    "UPDATE {part} SET amount = amount + 1",
    "UPDATE {part} SET created_at = created_at + interval '40 days'",
    "DELETE FROM {part}",
], ids=["update", "move month", "delete"])
def test_a_partition_child_refuses_update_and_delete(merchant, statement):
    _capture(merchant, "pay_1")
    with pytest.raises(DatabaseError, match=r"append-only|immutable|may not"):
        _sql(statement.format(part=_this_month()))
    assert ledger_verify().ok


def _triggers(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass", [table])
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_partitions_made_later_or_attached_by_hand_carry_every_trigger():
    parent = {t for t in _triggers(TABLE) if not t.startswith("RI_")}
    assert {"ledger_posting_immutable", "ledger_posting_apply", "ledger_posting_balanced",
            "ledger_posting_entry_time"} <= parent
    later = date(datetime.now(tz=UTC).year + 3, 1, 1)
    assert partitions.month_create(TABLE, later)
    assert parent <= _triggers(partitions.partition_name(TABLE, later))
    _sql("CREATE TABLE attack_month (LIKE ledger_posting INCLUDING ALL)")
    _sql("ALTER TABLE ledger_posting ATTACH PARTITION attack_month FOR VALUES FROM "
         f"('{later.year + 1}-01-01 00:00:00+00') TO ('{later.year + 1}-02-01 00:00:00+00')")
    assert parent <= _triggers("attack_month")
    assert parent <= _triggers("ledger_posting_default")


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["detach", "drop", "truncate"])
def test_a_month_removed_by_hand_fails_ledger_verify(merchant, how):
    _capture(merchant, "pay_1")
    assert ledger_verify().ok
    part = _this_month()
    _sql({"detach": f"ALTER TABLE ledger_posting DETACH PARTITION {part}",
          "drop": f"DROP TABLE {part}",
          "truncate": f"TRUNCATE {part}"}[how])
    result = ledger_verify()
    assert not result.ok
    assert "postings sum to" in result.report() or "balance" in result.report()


@pytest.mark.django_db
def test_forged_rows_attached_as_a_month_fail_ledger_verify(merchant):
    """ATTACH PARTITION does not run INSERT triggers on the rows it brings."""
    entry = _capture(merchant, "pay_1")
    posting = Posting.objects.filter(entry=entry).order_by("id").first()
    _sql("CREATE TABLE attack_month (LIKE ledger_posting INCLUDING ALL)")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO attack_month SELECT * FROM ledger_posting WHERE id = %s", [posting.id])
        cursor.execute("UPDATE attack_month SET id = 'bt_forged', amount = 1000000, "
                       "created_at = '2099-01-15 00:00:00+00'")
    _sql("ALTER TABLE ledger_posting ATTACH PARTITION attack_month FOR VALUES FROM "
         "('2099-01-01 00:00:00+00') TO ('2099-02-01 00:00:00+00')")
    assert not ledger_verify().ok
