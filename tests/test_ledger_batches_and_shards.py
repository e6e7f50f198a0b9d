"""entries_post (many entries under one pass of locks) and split platform accounts: the same
ledger as posting one by one, without one row every merchant's capture queues on."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.errors import InsufficientFunds
from core.services import merchant_create
from ledger import flows
from ledger.models import Account, JournalEntry
from ledger.services import EntrySpec, account_for, clearing_shard, entries_post
from ledger.verify import ledger_verify


def deposits(available: Account, amounts: list[int], prefix: str = "dep") -> list[EntrySpec]:
    source = account_for(currency="usd", kind="deposits_clearing")
    return [EntrySpec(kind="deposit_confirmed", lines=[(source, -a), (available, a)],
                      reference_type="deposit", reference_id=f"{prefix}_{i}",
                      merchant=available.merchant)
            for i, a in enumerate(amounts)]


@pytest.mark.django_db
def test_a_batch_posts_each_entry_with_exact_balance_after_in_two_round_trips(merchant):
    available = account_for(merchant=merchant, currency="usd", kind="available")
    specs = deposits(available, [100, 250, 5, 1_000])
    with CaptureQueriesContext(connection) as captured:
        entries = entries_post(specs)
    assert len(captured.captured_queries) == 2  # locks+replay+clock, inserts (savepoint rides)
    assert len({e.id for e in entries}) == 4
    rows = list(available.postings.order_by("account_version")
                .values_list("account_version", "amount", "balance_after"))
    assert rows == [(1, 100, 100), (2, 250, 350), (3, 5, 355), (4, 1_000, 1_355)]
    assert Account.objects.get(pk=available.pk).balance == 1_355
    assert ledger_verify().ok


@pytest.mark.django_db
def test_a_batch_is_idempotent_per_entry_and_refuses_the_same_event_twice(merchant):
    available = account_for(merchant=merchant, currency="usd", kind="available")
    first = entries_post(deposits(available, [100, 200]))
    again = entries_post(deposits(available, [100, 200, 300]))  # two already posted
    assert [e.pk for e in again[:2]] == [e.pk for e in first]
    assert Account.objects.get(pk=available.pk).balance == 600
    with pytest.raises(ValueError, match="twice"):
        entries_post(deposits(available, [1]) * 2)
    with pytest.raises(ValueError, match="different postings"):
        entries_post(deposits(available, [101]))


@pytest.mark.django_db
def test_a_batch_is_all_or_nothing_on_an_overdraft(merchant):
    available = account_for(merchant=merchant, currency="usd", kind="available")
    reserved = account_for(merchant=merchant, currency="usd", kind="reserved")
    specs = [*deposits(available, [100]),
             EntrySpec(kind="payout_created", lines=[(available, -150), (reserved, 150)],
                       reference_type="payout", reference_id="po_1", merchant=merchant)]
    with pytest.raises(InsufficientFunds):
        entries_post(specs)
    assert not JournalEntry.objects.exists()
    # In order, a deposit first makes the payout affordable: the batch sees its own entries.
    entries_post([*deposits(available, [100, 50]), specs[1]])
    assert Account.objects.get(pk=available.pk).balance == 0
    assert ledger_verify().ok


@pytest.mark.django_db
def test_captures_of_different_merchants_credit_different_clearing_rows(settings):
    settings.LEDGER_CLEARING_SHARDS = 8
    merchants = [merchant_create(name=f"Shard merchant {i}")[0] for i in range(24)]
    for i, merchant in enumerate(merchants):
        flows.post_capture(merchant=merchant, payment_id=f"pay_{i}", provider="sandbox",
                           currency="usd", amount=1_000 + i)
        flows.post_refund_created(merchant=merchant, refund_id=f"re_{i}", payment_id=f"pay_{i}",
                                  currency="usd", amount=100)
        flows.post_refund_succeeded(merchant=merchant, refund_id=f"re_{i}",
                                    payment_id=f"pay_{i}", provider="sandbox", currency="usd",
                                    amount=100)
    rows = Account.objects.filter(kind="provider_clearing", provider="sandbox", currency="usd")
    assert rows.count() > 1  # 24 merchants over 8 shards cannot all land on one
    assert {r.shard for r in rows} == {clearing_shard(m) for m in merchants}
    # One merchant always uses one row (its refunds come back to where its captures went).
    for merchant in merchants[:3]:
        shard = rows.get(shard=clearing_shard(merchant))
        assert shard.postings.filter(merchant__isnull=True).exists() or shard.version > 0
    # Summed on read, the split account is what one row would have been.
    assert sum(r.balance for r in rows) == -sum(1_000 + i - 100 for i in range(24))
    assert ledger_verify().ok


@pytest.mark.django_db
def test_only_platform_accounts_may_be_split(merchant):
    with pytest.raises(ValueError, match="only platform accounts"):
        account_for(merchant=merchant, currency="usd", kind="available", shard=2)
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError, match="shard_platform_only"), transaction.atomic():
        Account.objects.create(merchant=merchant, currency="usd", kind="available", shard=2)
