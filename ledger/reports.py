"""Reads that tie out to the cent: balances as of any moment, a trial balance, a merchant's period
report, and the balance transactions a payout paid out.

Every figure comes from postings, never from a stored total: an account's balance at a moment is
the `balance_after` of its last posting at or before it (postings of one account are ordered by
`account_version`, assigned under the account lock, and their `created_at` is read under that
lock too, so the two orders agree). A period's movements are the sums of its postings, so
`opening + movements == closing` is a check, not an identity we assume.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import QuerySet

from core.errors import NotFound
from core.models import Merchant
from ledger.models import MERCHANT_KINDS, AccountKind, EntryKind, Posting


@contextmanager
def one_snapshot() -> Iterator[None]:
    """Every read inside sees one consistent snapshot (REPEATABLE READ, READ ONLY), so figures
    read while money moves still tie out. Inside a caller's transaction (a test, a shell), that
    transaction is used as it is."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


_AS_OF_SQL = """
    SELECT DISTINCT ON (p.account_id) p.account_id, a.merchant_id, a.kind, a.provider, a.shard,
           a.currency, p.balance_after
      FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
     WHERE p.created_at <= %s {where}
     ORDER BY p.account_id, p.account_version DESC"""


@dataclass(frozen=True)
class AccountBalance:
    account_id: int
    merchant_id: str | None
    kind: str
    provider: str
    shard: int
    currency: str
    balance: int

    @property
    def code(self) -> str:
        return f"{self.kind}:{self.provider}" if self.provider else self.kind


def balances_as_of(*, as_of: datetime, merchant: Merchant | None = None) -> list[AccountBalance]:
    """Every account's balance at `as_of` (accounts with no posting by then are left out: 0)."""
    where, params = "", [as_of]
    if merchant is not None:
        where, params = "AND p.merchant_id = %s", [as_of, merchant.pk]
    with connection.cursor() as cursor:
        cursor.execute(_AS_OF_SQL.format(where=where), params)
        return [AccountBalance(*row) for row in cursor.fetchall()]


def merchant_balance_as_of(*, merchant: Merchant,
                           as_of: datetime) -> dict[str, list[dict[str, int | str]]]:
    """The shape of `GET /balance`, as it stood at `as_of`."""
    result: dict[str, list[dict[str, int | str]]] = {kind: [] for kind in sorted(MERCHANT_KINDS)}
    rows = sorted(balances_as_of(as_of=as_of, merchant=merchant),
                  key=lambda row: (row.currency, row.kind))
    for row in rows:
        result[row.kind].append({"amount": row.balance, "currency": row.currency})
    return result


@dataclass
class TrialBalance:
    as_of: datetime
    rows: list[AccountBalance]

    def totals(self) -> dict[str, int]:
        """Σ balances per currency: zero in a sound ledger."""
        sums: dict[str, int] = defaultdict(int)
        for row in self.rows:
            sums[row.currency] += row.balance
        return dict(sums)

    def by_code(self) -> dict[tuple[str, str], int]:
        """Platform accounts summed over their shards, merchant accounts per kind:
        {(code, currency): balance}."""
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for row in self.rows:
            sums[(row.code, row.currency)] += row.balance
        return dict(sums)


def trial_balance(*, as_of: datetime) -> TrialBalance:
    return TrialBalance(as_of=as_of, rows=balances_as_of(as_of=as_of))


# Movement categories of a merchant's period report, by the entry kinds that post them.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "captures": (EntryKind.CAPTURE,),
    "settlements": (EntryKind.SETTLEMENT,),
    "refunds": (EntryKind.REFUND_CREATED, EntryKind.REFUND_SUCCEEDED, EntryKind.REFUND_FAILED),
    "disputes": (EntryKind.DISPUTE_OPENED, EntryKind.DISPUTE_WON, EntryKind.DISPUTE_LOST),
    "deposits": (EntryKind.DEPOSIT_CONFIRMED,),
    "payouts": (EntryKind.PAYOUT_CREATED, EntryKind.PAYOUT_IN_TRANSIT, EntryKind.PAYOUT_PAID,
                EntryKind.PAYOUT_FAILED),
    "adjustments": (EntryKind.ADJUSTMENT, EntryKind.REVERSAL),
}
_CATEGORY_OF = {kind: name for name, kinds in CATEGORIES.items() for kind in kinds}


@dataclass
class PeriodReport:
    """One merchant, one currency, [start, end): balances by type, movements by category."""

    merchant_id: str
    currency: str
    start: datetime
    end: datetime
    opening: dict[str, int] = field(default_factory=dict)  # balance type → amount
    closing: dict[str, int] = field(default_factory=dict)
    movements: dict[str, dict[str, int]] = field(default_factory=dict)  # category → type → amount
    fees: int = 0  # what settlements kept as the platform's fee (not a balance movement)
    entries: int = 0

    @property
    def opening_total(self) -> int:
        return sum(self.opening.values())

    @property
    def closing_total(self) -> int:
        return sum(self.closing.values())

    def movement_total(self, category: str | None = None) -> int:
        rows = [self.movements.get(category, {})] if category else self.movements.values()
        return sum(sum(row.values()) for row in rows)

    def ties_out(self) -> bool:
        """Opening + movements = closing, for every balance type."""
        return all(
            self.opening.get(kind, 0) + sum(row.get(kind, 0) for row in self.movements.values())
            == self.closing.get(kind, 0) for kind in MERCHANT_KINDS)


_MOVEMENTS_SQL = """
    SELECT e.kind, a.kind, sum(p.amount), count(DISTINCT e.id)
      FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
      JOIN ledger_journalentry e ON e.id = p.entry_id
     WHERE p.merchant_id = %s AND p.currency = %s AND p.created_at >= %s AND p.created_at < %s
     GROUP BY e.kind, a.kind"""
# The platform side of the merchant's settlements: the fee account's postings in its entries.
_FEES_SQL = """
    SELECT COALESCE(sum(p.amount), 0)
      FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
      JOIN ledger_journalentry e ON e.id = p.entry_id
     WHERE e.merchant_id = %s AND a.kind = %s AND p.currency = %s
       AND p.created_at >= %s AND p.created_at < %s"""


def _balances_at(merchant: Merchant, currency: str, moment: datetime) -> dict[str, int]:
    # Strictly before `moment` for the opening of a half-open period: a posting at exactly
    # `start` belongs to this period, not the previous one.
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT DISTINCT ON (p.account_id) a.kind, p.balance_after
              FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
             WHERE p.merchant_id = %s AND p.currency = %s AND p.created_at < %s
             ORDER BY p.account_id, p.account_version DESC""", [merchant.pk, currency, moment])
        found = dict(cursor.fetchall())
    return {kind: found.get(kind, 0) for kind in sorted(MERCHANT_KINDS)}


def period_report(*, merchant: Merchant, currency: str, start: datetime,
                  end: datetime) -> PeriodReport:
    """The month-close report: run in one snapshot (REPEATABLE READ) by the caller for figures
    that tie out while money is moving; `ties_out()` says whether they do."""
    if end <= start:
        raise ValueError("a period ends after it starts")
    report = PeriodReport(merchant_id=merchant.pk, currency=currency, start=start, end=end,
                          opening=_balances_at(merchant, currency, start),
                          closing=_balances_at(merchant, currency, end))
    entries = 0
    with connection.cursor() as cursor:
        cursor.execute(_MOVEMENTS_SQL, [merchant.pk, currency, start, end])
        for entry_kind, account_kind, amount, count in cursor.fetchall():
            category = _CATEGORY_OF.get(entry_kind, "adjustments")
            row = report.movements.setdefault(category, {})
            row[account_kind] = row.get(account_kind, 0) + int(amount)
            entries += count
        cursor.execute(_FEES_SQL, [merchant.pk, AccountKind.FEES.value, currency, start, end])
        report.fees = int(cursor.fetchone()[0])
    report.entries = entries
    return report


def payout_postings(*, merchant: Merchant, payout_id: str) -> QuerySet[Posting]:
    """The balance transactions a payout paid out, as a merchant's finance team reconciles them:
    every movement of the `available` balance since the previous payout was reserved, up to and
    including this payout's own reservation (its debit), like Stripe's automatic payouts.
    Raises NotFound when the payout has no reservation in this merchant's ledger."""
    own = (Posting.objects.filter(merchant=merchant, account__kind=AccountKind.AVAILABLE,
                                  entry__reference_type="payout",
                                  entry__reference_id=payout_id,
                                  entry__kind=EntryKind.PAYOUT_CREATED)
           .values("account_id", "account_version").first())
    if own is None:
        raise NotFound(f"No such payout: '{payout_id}'.", param="payout")
    previous = (Posting.objects.filter(account_id=own["account_id"],
                                       account_version__lt=own["account_version"],
                                       entry__kind=EntryKind.PAYOUT_CREATED)
                .order_by("-account_version").values_list("account_version", flat=True).first())
    return (Posting.objects.select_related("entry", "account")
            .filter(account_id=own["account_id"], account_version__gt=previous or 0,
                    account_version__lte=own["account_version"]))


# -- per provider ----------------------------------------------------------------------------
@dataclass
class ProviderMovements:
    """What went through one provider in one currency over a period, as the ledger has it."""

    provider: str
    currency: str
    counts: dict[str, int] = field(default_factory=dict)  # entry kind → entries
    clearing: dict[str, int] = field(default_factory=dict)  # entry kind → Σ clearing postings
    settled_net: int = 0  # credited to merchants' available balances by settlements
    fees: int = 0  # kept by the platform from those settlements

    @property
    def settled_gross(self) -> int:
        return self.settled_net + self.fees

    @property
    def clearing_total(self) -> int:
        """The period's change of the provider's clearing balance (negative: it owes us more)."""
        return sum(self.clearing.values())


# Each provider_clearing posting of the period, by the entry kind that made it. The accounts are
# found first (a few rows) so each is read through its (account, version) index.
_PROVIDER_CLEARING_SQL = """
    SELECT a.provider, p.currency, e.kind, sum(p.amount), count(*)
      FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
      JOIN ledger_journalentry e ON e.id = p.entry_id
     WHERE p.account_id = ANY(ARRAY(SELECT id FROM ledger_account WHERE kind = %s))
       AND p.created_at >= %s AND p.created_at < %s
     GROUP BY 1, 2, 3"""
# Settlements of the period, attributed to the provider that captured the payment (the clearing
# account of the payment's capture entry): the net to merchants and the platform's fee.
_PROVIDER_SETTLEMENTS_SQL = """
    SELECT ca.provider, p.currency,
           COALESCE(sum(p.amount) FILTER (WHERE pa.kind = %s), 0),
           COALESCE(sum(p.amount) FILTER (WHERE pa.kind = %s), 0),
           count(DISTINCT e.id)
      FROM ledger_journalentry e
      JOIN ledger_posting p ON p.entry_id = e.id
      JOIN ledger_account pa ON pa.id = p.account_id
      JOIN ledger_journalentry c ON c.kind = %s AND c.reference_type = 'payment'
                                AND c.reference_id = e.reference_id
      JOIN ledger_posting cp ON cp.entry_id = c.id
      JOIN ledger_account ca ON ca.id = cp.account_id AND ca.kind = %s
     WHERE e.kind = %s AND p.created_at >= %s AND p.created_at < %s
     GROUP BY 1, 2"""


def provider_report(*, start: datetime, end: datetime) -> list[ProviderMovements]:
    """Per provider and currency over [start, end): captures, refunds, charge-backs and payouts
    through its clearing account, and the settlements of its payments (gross, fee, net). Run it
    in `one_snapshot()` for figures that agree with each other while money moves."""
    if end <= start:
        raise ValueError("a period ends after it starts")
    rows: dict[tuple[str, str], ProviderMovements] = {}

    def row(provider: str, currency: str) -> ProviderMovements:
        return rows.setdefault((provider, currency), ProviderMovements(provider, currency))

    with connection.cursor() as cursor:
        cursor.execute(_PROVIDER_CLEARING_SQL,
                       [AccountKind.PROVIDER_CLEARING.value, start, end])
        for provider, currency, kind, amount, count in cursor.fetchall():
            target = row(provider, currency)
            target.clearing[kind] = int(amount)
            target.counts[kind] = count
        cursor.execute(_PROVIDER_SETTLEMENTS_SQL, [
            AccountKind.AVAILABLE.value, AccountKind.FEES.value, EntryKind.CAPTURE.value,
            AccountKind.PROVIDER_CLEARING.value, EntryKind.SETTLEMENT.value, start, end])
        for provider, currency, net, fees, count in cursor.fetchall():
            target = row(provider, currency)
            target.settled_net, target.fees = int(net), int(fees)
            target.counts[EntryKind.SETTLEMENT.value] = count
    return [rows[key] for key in sorted(rows)]
