"""Reads of balances, balance transactions (postings) and entries, scoped to one merchant."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from core.models import Merchant
from core.selectors import narrowed, one_or_404
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
    return narrowed(Posting.objects.select_related("entry", "account").filter(merchant=merchant),
                    currency=currency, entry__kind=type, account__kind=balance_type)


def posting_get(*, merchant: Merchant, posting_id: str) -> Posting:
    return one_or_404(posting_list(merchant=merchant), posting_id, noun="balance transaction")


def entry_list_for(*, reference_type: str, reference_ids: Iterable[str]) -> QuerySet[JournalEntry]:
    """The entries explaining some business objects (e.g. a payment's admin page)."""
    return (JournalEntry.objects.filter(reference_type=reference_type,
                                        reference_id__in=list(reference_ids))
            .order_by("sequence"))
