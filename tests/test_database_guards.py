"""PostgreSQL enforces the money rules even for raw SQL that bypasses the services."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import DatabaseError

pytestmark = pytest.mark.django_db


def _sql(statement: str, params: list | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def test_a_raw_status_jump_is_rejected(make_payment):
    payment = make_payment(state="created")
    with pytest.raises(DatabaseError, match="not allowed"):
        _sql("UPDATE payments_payment SET status = 'captured' WHERE id = %s", [payment.id])
    payment.refresh_from_db()
    assert payment.status == "created"


def test_a_captured_payment_cannot_go_back_to_authorized(make_payment):
    payment = make_payment(state="captured")
    with pytest.raises(DatabaseError, match="not allowed"):
        _sql("UPDATE payments_payment SET status = 'authorized' WHERE id = %s", [payment.id])


def test_a_payment_cannot_be_inserted_already_captured(merchant):
    with pytest.raises(DatabaseError, match="must be created"):
        _sql("""INSERT INTO payments_payment (id, merchant_id, amount, currency, capture_method,
                payment_method, description, metadata, status, amount_authorized,
                amount_captured, amount_refunded, amount_disputed, provider, provider_reference,
                failure_code, failure_message, idempotency_key, created_at, updated_at)
                VALUES ('pay_raw', %s, 100, 'usd', 'automatic', 'pm_card_visa', '', '{}',
                'captured', 0, 0, 0, 0, '', '', '', '', '', now(), now())""", [merchant.id])


def test_amount_refunded_above_captured_is_rejected(make_payment):
    payment = make_payment(1000)
    with pytest.raises(IntegrityError):
        _sql("UPDATE payments_payment SET amount_refunded = 1001 WHERE id = %s", [payment.id])


def test_amount_refunded_must_match_succeeded_refunds_at_commit(make_payment):
    payment = make_payment(1000)
    # The check is deferred to COMMIT; the test runs inside a transaction, so ask for it now.
    with pytest.raises(DatabaseError, match="differs from succeeded refunds"):
        _sql("SET CONSTRAINTS ALL IMMEDIATE; "
             "UPDATE payments_payment SET amount_refunded = 500 WHERE id = %s", [payment.id])


def test_refunds_above_the_captured_amount_are_rejected_by_the_database(api, make_payment):
    payment = make_payment(1000)
    api.post("/refunds", {"payment": payment.id, "amount": 900})
    with pytest.raises(DatabaseError, match="would reach"):
        _sql("""INSERT INTO payments_refund (id, merchant_id, payment_id, amount, currency, reason,
                status, provider_reference, failure_code, failure_message, metadata,
                idempotency_key, created_at, updated_at)
                VALUES ('re_raw', %s, %s, 200, 'usd', '', 'pending', '', '', '', '{}', '',
                now(), now())""", [payment.merchant_id, payment.id])


def test_a_failed_refund_cannot_be_revived(api, make_payment):
    payment = make_payment(1000)
    refund_id = api.post("/refunds", {"payment": payment.id, "amount": 100}).json()["id"]
    with pytest.raises(DatabaseError, match="not allowed"):
        _sql("UPDATE payments_refund SET status = 'pending' WHERE id = %s", [refund_id])


def test_fsm_fields_cannot_be_assigned_in_python(make_payment):
    payment = make_payment(state="created")
    with pytest.raises(AttributeError):
        payment.status = "captured"
