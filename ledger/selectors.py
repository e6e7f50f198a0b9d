"""Reads of balances, balance transactions (postings) and entries, scoped to one merchant."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from core.errors import NotFound
from core.models import Merchant
from ledger.models import MERCHANT_KINDS, Account, JournalEntry, Posting


def balance_get(*, merchant: Merchant) -> dict[str, list[dict[str, int | str]]]:
    """{kind: [{"amount", "currency"}, …]} for pending, available, reserved and disputed."""
    balance: dict[str, list[dict[str, int | str]]] = {kind: [] for kind in sorted(MERCHANT_KINDS)}
    rows = (Account.objects.filter(merchant=merchant, kind__in=MERCHANT_KINDS)
            .order_by("currency", "kind").values_list("kind", "currency", "balance"))
    for kind, currency, amount in rows:
        balance[kind].append({"amount": amount, "currency": currency})
    return balance


def posting_list(
    *, merchant: Merchant, currency: str | None = None, type: str | None = None,
    balance_type: str | None = None,
) -> QuerySet[Posting]:
    rows = Posting.objects.select_related("entry", "account").filter(merchant=merchant)
    if currency:
        rows = rows.filter(currency=currency)
    if type:
        rows = rows.filter(entry__kind=type)
    if balance_type:
        rows = rows.filter(account__kind=balance_type)
    return rows


def posting_get(*, merchant: Merchant, posting_id: str) -> Posting:
    posting = (Posting.objects.select_related("entry", "account")
               .filter(merchant=merchant, pk=posting_id).first())
    if posting is None:
        raise NotFound(f"No such balance transaction: '{posting_id}'.", param="id")
    return posting


def entry_list_for(*, reference_type: str, reference_ids: Iterable[str]) -> QuerySet[JournalEntry]:
    """The entries explaining some business objects (e.g. a payment's admin page)."""
    return (JournalEntry.objects.filter(reference_type=reference_type,
                                        reference_id__in=list(reference_ids))
            .order_by("sequence"))
