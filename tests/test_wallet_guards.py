"""The database itself refuses wallet changes the services would never make: states only along
the contract's table, amounts immutable, and no status without its ledger entries."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from wallet import services
from wallet.models import Payout

pytestmark = pytest.mark.django_db


def _sql(statement: str, *params: object) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the COMMIT-time checks now


@pytest.fixture
def funded(merchant):
    services.deposit_create(merchant=merchant, amount=1000, currency="usd", method="pix")
    return merchant


def _payout(merchant, destination: str = "ba_checking") -> Payout:
    return services.payout_create(merchant=merchant, amount=100, currency="usd",
                                  destination=destination)


@pytest.mark.parametrize("change", [
    "status = 'pending'",  # backwards
    "status = 'canceled'",
    "amount = amount + 1",
    "currency = 'eur'",
    "destination = 'ba_elsewhere'",
    "provider_reference = 'sbxpo_other'",
])
def test_raw_sql_cannot_rewrite_an_in_transit_payout(funded, change):
    payout = _payout(funded)
    assert payout.status == "in_transit"
    with pytest.raises(IntegrityError):
        _sql(f"UPDATE wallet_payout SET {change} WHERE id = %s", payout.id)


def test_a_finished_payout_never_changes_status(funded):
    payout = _payout(funded, "ba_rejected")
    assert payout.status == "failed"
    for status in ("paid", "in_transit", "pending"):
        with pytest.raises(IntegrityError):
            _sql("UPDATE wallet_payout SET status = %s WHERE id = %s", status, payout.id)


def test_a_payout_status_without_its_ledger_entry_fails_at_commit(funded):
    payout = _payout(funded)
    # in_transit → paid is a legal transition, but nothing moved the money: refused at COMMIT.
    with pytest.raises(IntegrityError, match="ledger entries"):
        _sql("UPDATE wallet_payout SET status = 'paid' WHERE id = %s", payout.id)


def test_a_payout_cannot_be_inserted_past_pending_or_without_its_reserve(funded):
    with pytest.raises(IntegrityError):
        _sql("""INSERT INTO wallet_payout (id, merchant_id, amount, currency, destination,
                description, metadata, status, provider, provider_reference, failure_code,
                failure_message, idempotency_key, created_at, updated_at)
                VALUES ('po_raw', %s, 100, 'usd', 'ba_x', '', '{}', 'paid', 'sandbox', '', '',
                '', '', now(), now())""", funded.pk)
    with pytest.raises(IntegrityError, match="ledger entries"):
        _sql("""INSERT INTO wallet_payout (id, merchant_id, amount, currency, destination,
                description, metadata, status, provider, provider_reference, failure_code,
                failure_message, idempotency_key, created_at, updated_at)
                VALUES ('po_raw', %s, 100, 'usd', 'ba_x', '', '{}', 'pending', 'sandbox', '', '',
                '', '', now(), now())""", funded.pk)


def test_a_deposit_cannot_succeed_without_crediting_the_balance(merchant):
    deposit = services.deposit_create(merchant=merchant, amount=500, currency="usd",
                                      method="pending")
    with pytest.raises(IntegrityError, match="ledger entries"):
        _sql("UPDATE wallet_deposit SET status = 'succeeded' WHERE id = %s", deposit.id)
    done = services.deposit_create(merchant=merchant, amount=500, currency="usd", method="pix")
    for change in ("status = 'failed'", "status = 'pending'", "amount = 1"):
        with pytest.raises(IntegrityError):
            _sql(f"UPDATE wallet_deposit SET {change} WHERE id = %s", done.id)
