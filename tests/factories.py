"""factory-boy factories. Payments are moved through the real services, never by setting status."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from core.models import Merchant
from core.services import api_key_create
from payments.models import Payment
from payments.services import payment_authorization_execute, payment_confirm, payment_create


class MerchantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Merchant

    name = factory.Sequence(lambda n: f"Merchant {n}")


def merchant_with_key(**kwargs: object) -> tuple[Merchant, str]:
    merchant = MerchantFactory(**kwargs)
    return merchant, api_key_create(merchant=merchant).raw_key


def balances_of(merchant: Merchant, currency: str = "usd") -> dict[str, int]:
    """{kind: amount} of the merchant's ledger accounts in one currency (0 when none exists)."""
    from ledger.selectors import balance_get

    return {kind: sum(row["amount"] for row in rows if row["currency"] == currency)
            for kind, rows in balance_get(merchant=merchant).items()}


def pay(merchant: Merchant, *, amount: int = 1050, currency: str = "brl",
        card: str = "pm_card_visa", capture_method: str = "automatic",
        send: bool = True) -> Payment:
    """Create and confirm a payment, then do what the worker's task does with its authorization
    attempt (unless `send` is False: the attempt stays `requested`). A fresh read, not
    refresh_from_db(): django-fsm's refresh toggles a class-level flag, which is not thread-safe
    and this helper runs in threads."""
    payment = payment_create(merchant=merchant, amount=amount, currency=currency,
                             payment_method=card, capture_method=capture_method)
    payment_confirm(merchant=merchant, payment_id=payment.id)
    attempt = payment.attempts.first()  # none when confirming failed before any provider call
    if send and attempt is not None:
        payment_authorization_execute(attempt_id=attempt.id)
    return Payment.objects.get(pk=payment.pk)


STAFF_PASSWORD = "pw-12345678"


def staff_user(role: str, name: str | None = None, *, client: Any = None,
               password: str = STAFF_PASSWORD, **fields: Any) -> Any:
    """A back-office user in the group `role` (named `name`, else after the role), read fresh
    so no permissions are cached; logged in on the test `client` when one is given."""
    user = get_user_model().objects.create_user(name or role, password=password,
                                                is_staff=True, **fields)
    user.groups.add(Group.objects.get(name=role))
    if client is not None:
        client.force_login(user)
    return get_user_model().objects.get(pk=user.pk)


def created_payments_insert(cursor: Any, merchant: Merchant, count: int, *, id_sql: str,
                            amount_sql: str, description_sql: str, provider: str,
                            reference_sql: str, created_sql: str, currency: str = "usd") -> None:
    """`count` payments of `merchant` in one INSERT … SELECT over generate_series (i is the row
    number in the SQL fragments), inserted as `created`, which the status trigger requires. For
    list, search and export tests at scale, not money tests."""
    cursor.execute(f"""
        INSERT INTO payments_payment (
            id, merchant_id, amount, currency, capture_method, payment_method, description,
            metadata, status, amount_authorized, amount_captured, amount_refunded,
            amount_disputed, provider, provider_reference, failure_code, failure_message,
            idempotency_key, created_at, updated_at)
        SELECT {id_sql}, %s, {amount_sql}, %s, 'automatic', 'pm_card_visa',
               {description_sql}, '{{}}', 'created', 0, 0, 0, 0, %s, {reference_sql}, '', '',
               '', {created_sql}, {created_sql}
          FROM generate_series(1, %s) AS i""", [merchant.pk, currency, provider, count])


def payments_insert(merchant: Merchant, rows: int, *, prefix: str, currency: str = "usd",
                    amount: int = 1000, step: int = 1, description: str = "order {i}",
                    reference: str = "ref_{i}", provider: str = "sandbox") -> None:
    """`rows` created payments `<prefix><i, 16 digits>`, the i-th `amount + i * step` and i
    seconds old; `{i}` in description and reference is replaced by i."""
    from django.db import connection

    def text(template: str) -> str:  # a quoted SQL literal with {i} spliced in
        quoted = template.replace("'", "''").replace("%", "%%")
        return f"replace('{quoted}', '{{i}}', i::text)"

    with connection.cursor() as cursor:
        created_payments_insert(
            cursor, merchant, rows, id_sql=f"{text(prefix)} || lpad(i::text, 16, '0')",
            amount_sql=f"{int(amount)} + i * {int(step)}", description_sql=text(description),
            provider=provider, reference_sql=text(reference), currency=currency,
            created_sql="now() - i * interval '1 second'")
