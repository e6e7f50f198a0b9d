"""entry_post and entry_reverse: balanced lines, overdraft rules, balances, chaining, replays."""

from __future__ import annotations

import pytest
from django.db import transaction

from core.errors import InsufficientFunds
from ledger.chain import GENESIS_HASH
from ledger.models import Account, JournalEntry, Posting
from ledger.services import account_for, entry_post, entry_reverse
from ledger.verify import ledger_verify


@pytest.fixture
def usd(merchant):
    """A merchant's available and pending usd accounts and the platform's fees account."""
    return (account_for(merchant=merchant, currency="usd", kind="available"),
            account_for(merchant=merchant, currency="usd", kind="pending"),
            account_for(currency="usd", kind="fees"))


def fund(account: Account, amount: int, ref: str = "seed") -> JournalEntry:
    source = account_for(currency=account.currency, kind="deposits_clearing")
    return entry_post(kind="deposit_confirmed", lines=[(source, -amount), (account, amount)],
                      reference_type="deposit", reference_id=ref)


def balance(account: Account) -> int:
    return Account.objects.get(pk=account.pk).balance


@pytest.mark.django_db
def test_account_for_returns_the_same_account_and_validates_owner(merchant):
    first = account_for(merchant=merchant, currency="usd", kind="available")
    assert account_for(merchant=merchant, currency="usd", kind="available") == first
    platform = account_for(currency="usd", kind="provider_clearing", provider="sandbox")
    assert platform.code == "provider_clearing:sandbox"
    assert account_for(currency="usd", kind="provider_clearing", provider="sandbox") == platform
    assert account_for(currency="usd", kind="provider_clearing", provider="other") != platform
    with pytest.raises(ValueError, match="belong to a merchant"):
        account_for(currency="usd", kind="available")
    with pytest.raises(ValueError, match="platform"):
        account_for(merchant=merchant, currency="usd", kind="fees")
    with pytest.raises(ValueError, match="provider is required"):
        account_for(currency="usd", kind="provider_clearing")
    with pytest.raises(ValueError, match="currency"):
        account_for(merchant=merchant, currency="usd1", kind="available")


@pytest.mark.django_db
def test_entry_post_moves_balances_and_records_balance_after(usd):
    available, pending, fees = usd
    fund(pending, 1000)
    entry = entry_post(kind="settlement", lines=[(pending, -1000), (available, 970), (fees, 30)],
                       reference_type="payment", reference_id="pay_1",
                       merchant=available.merchant)
    assert entry.id.startswith("txn_")
    assert (balance(available), balance(pending), balance(fees)) == (970, 0, 30)
    rows = {p.account_id: (p.amount, p.balance_after, p.currency)
            for p in Posting.objects.filter(entry=entry)}
    assert rows == {available.pk: (970, 970, "usd"), pending.pk: (-1000, 0, "usd"),
                    fees.pk: (30, 30, "usd")}
    assert Account.objects.get(pk=pending.pk).version == 2
    assert ledger_verify().ok


@pytest.mark.django_db
def test_each_accounts_postings_form_a_hash_chain(usd):
    available, _, _ = usd
    first, second = fund(available, 10, "dep_1"), fund(available, 20, "dep_2")
    one, two = (entry.postings.get(account=available) for entry in (first, second))
    assert (one.account_version, one.prev_hash) == (1, GENESIS_HASH)
    assert (two.account_version, two.prev_hash) == (2, one.hash)
    assert Account.objects.get(pk=available.pk).head_hash == two.hash
    clearing = first.postings.exclude(account=available).get()
    assert second.postings.exclude(account=available).get().prev_hash == clearing.hash
    assert second.sequence > first.sequence
    assert second.created_at >= first.created_at


@pytest.mark.django_db
@pytest.mark.parametrize(("lines", "message"), [
    (lambda a, p, f: [(a, 10)], "at least two"),
    (lambda a, p, f: [(a, 10), (p, -9)], "sum to zero"),
    (lambda a, p, f: [(a, 10), (a, -10)], "twice"),
    (lambda a, p, f: [(a, 0), (p, 0)], "non-zero"),
    (lambda a, p, f: [(a, 10.0), (p, -10.0)], "non-zero int"),
    (lambda a, p, f: [(a, True), (p, -1)], "non-zero int"),
])
def test_malformed_lines_are_refused_before_touching_the_database(usd, lines, message):
    with pytest.raises(ValueError, match=message):
        entry_post(kind="adjustment", lines=lines(*usd), reference_type="test",
                   reference_id="x")
    assert not JournalEntry.objects.exists()


@pytest.mark.django_db
def test_lines_on_an_account_that_does_not_exist_are_refused(usd):
    available, pending, _ = usd
    ghost = Account(pk=10**12, merchant=available.merchant, currency="usd", kind="reserved")
    with pytest.raises(ValueError, match="do not exist"):
        entry_post(kind="adjustment", lines=[(pending, -5), (ghost, 5)], reference_type="test",
                   reference_id="x")


@pytest.mark.django_db
def test_lines_in_two_currencies_must_each_sum_to_zero(merchant):
    usd = account_for(merchant=merchant, currency="usd", kind="pending")
    eur = account_for(merchant=merchant, currency="eur", kind="pending")
    with pytest.raises(ValueError, match="per currency"):
        entry_post(kind="adjustment", lines=[(usd, 10), (eur, -10)], reference_type="test",
                   reference_id="fx")


@pytest.mark.django_db
def test_an_entry_for_one_merchant_may_not_touch_another_merchants_account(usd):
    from tests.factories import MerchantFactory

    available, pending, _ = usd
    stranger = account_for(merchant=MerchantFactory(), currency="usd", kind="pending")
    with pytest.raises(ValueError, match="another merchant"):
        entry_post(kind="adjustment", lines=[(pending, -5), (stranger, 5)],
                   reference_type="test", reference_id="x", merchant=available.merchant)


@pytest.mark.django_db
def test_overdrawing_available_raises_insufficient_funds_and_changes_nothing(usd):
    available, pending, _ = usd
    fund(available, 100)
    with pytest.raises(InsufficientFunds, match=r"available balance is 1.00 USD .* 1.50 USD"):
        entry_post(kind="adjustment", lines=[(available, -150), (pending, 150)],
                   reference_type="test", reference_id="x")
    assert (balance(available), balance(pending)) == (100, 0)
    assert JournalEntry.objects.count() == 1


@pytest.mark.django_db
def test_overdraft_of_available_is_allowed_only_when_the_entry_kind_may(usd):
    available, _, _ = usd
    reserved = account_for(merchant=available.merchant, currency="usd", kind="reserved")
    entry_post(kind="refund_created", lines=[(available, -150), (reserved, 150)],
               reference_type="refund", reference_id="re_1",
               allow_negative=frozenset({"available"}))
    assert balance(available) == -150
    with pytest.raises(ValueError, match="may not overdraw"):
        entry_post(kind="payout_created", lines=[(available, -1), (reserved, 1)],
                   reference_type="payout", reference_id="po_1",
                   allow_negative=frozenset({"available"}))
    with pytest.raises(ValueError, match="never"):
        entry_post(kind="refund_created", lines=[(reserved, -500), (available, 500)],
                   reference_type="refund", reference_id="re_2",
                   allow_negative=frozenset({"reserved"}))


@pytest.mark.django_db
def test_a_credit_to_a_negative_available_balance_is_fine(usd):
    available, _, _ = usd
    reserved = account_for(merchant=available.merchant, currency="usd", kind="reserved")
    entry_post(kind="dispute_opened", lines=[(available, -100), (reserved, 100)],
               reference_type="dispute", reference_id="dp_1",
               allow_negative=frozenset({"available"}))
    fund(available, 40)
    assert balance(available) == -60


@pytest.mark.django_db
def test_reserved_never_goes_negative(usd):
    available, _, _ = usd
    reserved = account_for(merchant=available.merchant, currency="usd", kind="reserved")
    with pytest.raises(InsufficientFunds, match="reserved balance"):
        entry_post(kind="adjustment", lines=[(reserved, -1), (available, 1)],
                   reference_type="test", reference_id="x")


@pytest.mark.django_db
def test_posting_the_same_event_twice_returns_the_first_entry(usd):
    available, _, _ = usd
    first = fund(available, 100, "dep_1")
    assert fund(available, 100, "dep_1") == first
    assert balance(available) == 100
    with pytest.raises(ValueError, match="different postings"):
        fund(available, 999, "dep_1")


@pytest.mark.django_db
def test_entry_post_inside_a_callers_transaction_rolls_back_with_it(usd):
    available, _, _ = usd

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        fund(available, 100)
        raise Abort
    assert balance(available) == 0
    assert not JournalEntry.objects.exists()


@pytest.mark.django_db
def test_insufficient_funds_inside_a_callers_transaction_leaves_it_usable(usd):
    available, pending, _ = usd
    with transaction.atomic():
        fund(available, 10)
        with pytest.raises(InsufficientFunds):
            entry_post(kind="payout_created", lines=[(available, -50), (pending, 50)],
                       reference_type="payout", reference_id="po_1")
        fund(pending, 5, "dep_2")
    assert (balance(available), balance(pending)) == (10, 5)


@pytest.mark.django_db
def test_entry_reverse_posts_the_mirror_image(usd):
    available, pending, fees = usd
    fund(pending, 1000)
    entry = entry_post(kind="settlement", lines=[(pending, -1000), (available, 970), (fees, 30)],
                       reference_type="payment", reference_id="pay_1")
    reversal = entry_reverse(entry=entry, reason="settled twice by mistake")
    assert reversal.kind == "reversal"
    assert (reversal.reference_type, reversal.reference_id) == ("journal_entry", entry.id)
    assert (balance(available), balance(pending), balance(fees)) == (0, 1000, 0)
    assert entry_reverse(entry=entry, reason="again") == reversal  # once only
    assert ledger_verify().ok


@pytest.mark.django_db
def test_reversal_may_take_available_negative(usd):
    available, pending, _ = usd
    deposit = fund(available, 100)
    entry_post(kind="adjustment", lines=[(available, -80), (pending, 80)],
               reference_type="test", reference_id="x")
    entry_reverse(entry=deposit, reason="deposit bounced")
    assert balance(available) == -80
