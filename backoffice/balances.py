"""Merchant balances for the ledger pages: pending / available / reserved / disputed per merchant
and currency, read from the maintained balance columns (`ledger_verify` proves them equal to the
postings)."""

from __future__ import annotations

from dataclasses import dataclass

from core.money import format_amount
from ledger.models import MERCHANT_KINDS, Account


@dataclass
class BalanceRow:
    merchant_id: str
    merchant_name: str
    currency: str
    amounts: dict[str, str]


def merchant_balances(*, merchant_id: str | None = None, limit: int = 200) -> list[BalanceRow]:
    """Pending / available / reserved / disputed per merchant and currency, from the maintained
    balance columns (ledger_verify proves them equal to the postings)."""
    rows = (Account.objects.filter(merchant__isnull=False, kind__in=MERCHANT_KINDS)
            .select_related("merchant").order_by("merchant__name", "merchant_id", "currency"))
    if merchant_id:
        rows = rows.filter(merchant_id=merchant_id)
    table: dict[tuple[str, str], BalanceRow] = {}
    for account in rows[: limit * len(MERCHANT_KINDS)]:
        key = (account.merchant_id, account.currency)
        if key not in table:
            table[key] = BalanceRow(account.merchant_id, account.merchant.name, account.currency,
                                    {kind: format_amount(0, account.currency)
                                     for kind in sorted(MERCHANT_KINDS)})
        table[key].amounts[account.kind] = format_amount(account.balance, account.currency)
    return list(table.values())


def merchant_balance(*, merchant_id: str, currency: str) -> dict[str, str]:
    """One merchant's four balances in one currency (the dispute page's "balance effects")."""
    amounts = {kind: 0 for kind in sorted(MERCHANT_KINDS)}
    for kind, balance in Account.objects.filter(
            merchant_id=merchant_id, currency=currency,
            kind__in=MERCHANT_KINDS).values_list("kind", "balance"):
        amounts[kind] = balance
    return {kind: format_amount(amount, currency) for kind, amount in amounts.items()}
