"""Holes an attacker found in accounts by key and in the merchant of an entry, each seen failing
before its fix: a key for a currency, kind, owner or shard that must not exist is refused when it
is made (ValueError, no SQL), and an entry moves one merchant's balances at most (Python, the
COMMIT-time trigger and ledger_verify). Helpers live in tests/test_attack_ledger_keys.py."""

from __future__ import annotations

import pytest
from django.db import Error, connection
from django.test.utils import CaptureQueriesContext

from ledger.models import Account, JournalEntry
from ledger.services import AccountKey, account_key, entry_post
from ledger.verify import ledger_verify
from tests.factories import MerchantFactory
from tests.test_attack_ledger_keys import _bad_keys, assert_clean_autocommit


@pytest.mark.django_db(transaction=True)
def test_an_account_in_a_currency_that_does_not_exist_is_never_created():
    """AccountKey is a public dataclass and entry_post takes it as it is: 'xyz' is no currency
    (core.money.CURRENCIES), but matches the database's ^[a-z]{3}$ check, so the account is
    created and posted to."""
    with pytest.raises((ValueError, Error)):
        entry_post(kind="adjustment", reference_type="t", reference_id="xyz",
                   lines=[(AccountKey(None, "xyz", "fees"), -100),
                          (AccountKey(None, "xyz", "payouts_in_transit"), 100)])
    assert_clean_autocommit()
    assert not Account.objects.filter(currency="xyz").exists()
    assert not JournalEntry.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("case", [c for c in _bad_keys("x") if "does not exist" not in c])
def test_a_key_naming_an_account_that_must_not_exist_is_refused_before_sql(case):
    """entry_post validates keys made by account_key() only: a key built directly reaches
    PostgreSQL, whose CHECK constraints answer with an IntegrityError (after BEGIN, an INSERT
    and a ROLLBACK) instead of the ValueError the module promises for programming errors."""
    merchant = MerchantFactory()
    with CaptureQueriesContext(connection) as queries, pytest.raises(ValueError):
        entry_post(kind="adjustment", lines=_bad_keys(merchant.pk)[case](),
                   reference_type="t", reference_id=case)
    assert len(queries) == 0


@pytest.mark.parametrize("shard", [-1, 70_000])
def test_account_key_refuses_a_shard_the_column_cannot_hold(shard):
    """account_key accepts any non-zero shard on a platform account; PostgreSQL then refuses
    -1 (PositiveSmallIntegerField's CHECK) or 70,000 (smallint) with an IntegrityError or
    DataError at posting time."""
    with pytest.raises(ValueError):
        account_key(currency="usd", kind="provider_clearing", provider="sandbox", shard=shard)


@pytest.mark.django_db
def test_one_entry_may_not_move_two_merchants_balances():
    """With no merchant given and lines on two merchants' accounts, no merchant is derived and
    the entry is stored with merchant NULL: Python, the posting trigger (it checks only entries
    that have a merchant) and ledger_verify (same condition) all accept a transfer from one
    merchant's balance to another's. Each merchant's balance transactions then show an entry
    that belongs to neither of them."""
    a, b = MerchantFactory(), MerchantFactory()
    with pytest.raises((ValueError, Error)):
        entry_post(kind="adjustment", reference_type="t", reference_id="cross",
                   lines=[(account_key(merchant=a, currency="usd", kind="pending"), -100),
                          (account_key(merchant=b, currency="usd", kind="pending"), 100)])
    assert not JournalEntry.objects.exists()
    assert ledger_verify().ok
