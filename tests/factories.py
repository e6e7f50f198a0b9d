"""factory-boy factories. Payments are moved through the real services, never by setting status."""

from __future__ import annotations

import factory

from core.models import Merchant
from core.services import api_key_create


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
