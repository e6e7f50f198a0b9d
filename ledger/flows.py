"""The money flows: one small function per business event, each posting one balanced entry.

Payments, disputes, deposits and payouts call these inside their own transaction, right after
the state change they record (see `ledger.services` on locking). Each is idempotent per
business object: calling it again for the same object posts nothing and returns the first entry.
A transaction posts one entry, or one batch (`post_refund_recorded`): a second entry_post in the
same transaction locks its accounts after the first's, which can deadlock with another
transaction locking them in id order.

| event                        | debit (−)                  | credit (+)                          |
|------------------------------|----------------------------|-------------------------------------|
| capture                      | provider_clearing:<p>      | pending                             |
| settlement                   | pending                    | available (amount − fee), fees      |
| refund created (reserve)     | available (may go < 0)     | reserved                            |
| refund succeeded             | reserved                   | provider_clearing:<p>               |
| refund failed (release)      | reserved                   | available                           |
| dispute opened               | available (may go < 0)     | disputed                            |
| dispute won                  | disputed                   | available                           |
| dispute lost (charged back)  | disputed                   | provider_clearing:<p>               |
| deposit confirmed            | deposits_clearing          | available                           |
| payout created (reserve)     | available (never < 0: 409) | reserved                            |
| payout in transit            | reserved                   | payouts_in_transit                  |
| payout paid                  | payouts_in_transit *       | provider_clearing:<p>               |
| payout failed                | payouts_in_transit *       | available                           |

* or `reserved` if the payout never went in transit (paid or failed straight from pending).

`provider_clearing:<p>` is split into shards by merchant (`ledger.services.clearing_shard`) so
captures of different merchants do not queue on one row; its balance is the sum of its shards.

Signs: a merchant account's balance is what the platform owes the merchant; the platform
accounts hold the other side (provider_clearing is negative while a provider owes us funds), so
every currency sums to zero. Only refunds and disputes may take `available` negative, as at
Stripe; payouts never may (InsufficientFunds, 409 `insufficient_funds`).
"""

from __future__ import annotations

from typing import Any

from core.models import Merchant
from ledger.models import AccountKind, EntryKind, JournalEntry
from ledger.services import (
    AccountKey,
    EntrySpec,
    account_key,
    clearing_key,
    entries_post,
    entry_post,
)

MAY_GO_NEGATIVE = frozenset({AccountKind.AVAILABLE.value})


def _positive(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount {amount!r} must be a positive int in minor units")
    return amount


# Accounts by key: entry_post finds (or creates) and locks them in one round trip.
def _merchant_account(merchant: Merchant, currency: str, kind: str) -> AccountKey:
    return account_key(merchant=merchant, currency=currency, kind=kind)


def _platform(currency: str, kind: str) -> AccountKey:
    return account_key(currency=currency, kind=kind)


def _clearing(merchant: Merchant, currency: str, provider: str) -> AccountKey:
    # Split by merchant (ledger.services.clearing_shard): every capture touches this account.
    return clearing_key(merchant=merchant, currency=currency, provider=provider)


def _spec(
    *, kind: str, merchant: Merchant, reference_type: str, reference_id: str, description: str,
    source: AccountKey, target: AccountKey, amount: int,
    allow_negative: frozenset[str] = frozenset(),
) -> EntrySpec:
    amount = _positive(amount)
    return EntrySpec(kind=kind, lines=[(source, -amount), (target, amount)],
                     reference_type=reference_type, reference_id=reference_id,
                     description=description, merchant=merchant, allow_negative=allow_negative)


def _move(**spec: Any) -> JournalEntry:
    return entries_post([_spec(**spec)])[0]


# -- payments --------------------------------------------------------------------------------
def post_capture(
    *, merchant: Merchant, payment_id: str, provider: str, currency: str, amount: int,
    capture_id: str = "",
) -> JournalEntry:
    """A payment's capture. Its first (usually only) capture is the payment's entry; each
    later partial capture of the same authorization is its own entry, named by its capture
    attempt (`capture_id`, reference type `capture`)."""
    reference = ("capture", capture_id) if capture_id else ("payment", payment_id)
    return _move(kind=EntryKind.CAPTURE, merchant=merchant, reference_type=reference[0],
                 reference_id=reference[1], description=f"Capture of {payment_id}",
                 source=_clearing(merchant, currency, provider),
                 target=_merchant_account(merchant, currency, AccountKind.PENDING),
                 amount=amount)


def post_settlement(
    *, merchant: Merchant, payment_id: str, currency: str, amount: int, fee: int = 0
) -> JournalEntry:
    """The provider settled `amount` of a captured payment: pending → available, less `fee`."""
    amount = _positive(amount)
    if isinstance(fee, bool) or not isinstance(fee, int) or not 0 <= fee <= amount:
        raise ValueError(f"fee {fee!r} must be an int from 0 to the settled amount")
    lines = [(_merchant_account(merchant, currency, AccountKind.PENDING), -amount)]
    if amount - fee:
        lines.append((_merchant_account(merchant, currency, AccountKind.AVAILABLE), amount - fee))
    if fee:
        lines.append((_platform(currency, AccountKind.FEES), fee))
    return entry_post(kind=EntryKind.SETTLEMENT, lines=lines, reference_type="payment",
                      reference_id=payment_id, merchant=merchant,
                      description=f"Settlement of {payment_id} (fee {fee})")


# -- refunds ---------------------------------------------------------------------------------
def _refund_reserved(
    *, merchant: Merchant, refund_id: str, payment_id: str, currency: str, amount: int
) -> EntrySpec:
    return _spec(kind=EntryKind.REFUND_CREATED, merchant=merchant, reference_type="refund",
                 reference_id=refund_id, description=f"Refund {refund_id} of {payment_id}",
                 source=_merchant_account(merchant, currency, AccountKind.AVAILABLE),
                 target=_merchant_account(merchant, currency, AccountKind.RESERVED), amount=amount,
                 allow_negative=MAY_GO_NEGATIVE)


def _refund_sent(
    *, merchant: Merchant, refund_id: str, payment_id: str, provider: str, currency: str,
    amount: int,
) -> EntrySpec:
    return _spec(kind=EntryKind.REFUND_SUCCEEDED, merchant=merchant, reference_type="refund",
                 reference_id=refund_id, description=f"Refund {refund_id} of {payment_id} sent",
                 source=_merchant_account(merchant, currency, AccountKind.RESERVED),
                 target=_clearing(merchant, currency, provider), amount=amount)


def post_refund_created(
    *, merchant: Merchant, refund_id: str, payment_id: str, currency: str, amount: int
) -> JournalEntry:
    """Reserve the refund out of available, which may go negative (the merchant owes it)."""
    return entries_post([_refund_reserved(merchant=merchant, refund_id=refund_id,
                                          payment_id=payment_id, currency=currency,
                                          amount=amount)])[0]


def post_refund_succeeded(
    *, merchant: Merchant, refund_id: str, payment_id: str, provider: str, currency: str,
    amount: int,
) -> JournalEntry:
    return entries_post([_refund_sent(merchant=merchant, refund_id=refund_id,
                                      payment_id=payment_id, provider=provider,
                                      currency=currency, amount=amount)])[0]


def post_refund_recorded(
    *, merchant: Merchant, refund_id: str, payment_id: str, provider: str, currency: str,
    amount: int,
) -> list[JournalEntry]:
    """A refund that was already made at the provider: reserved and sent in one batch, so both
    entries' accounts are locked together in one order. Two entry_post calls in one transaction
    would lock (available, reserved) and then clearing, while a concurrent refund_succeeded
    locks clearing (a lower id) and then reserved: a deadlock."""
    refund = {"merchant": merchant, "refund_id": refund_id, "payment_id": payment_id,
              "currency": currency, "amount": amount}
    return entries_post([_refund_reserved(**refund), _refund_sent(**refund, provider=provider)])


def post_refund_failed(
    *, merchant: Merchant, refund_id: str, payment_id: str, currency: str, amount: int
) -> JournalEntry:
    return _move(kind=EntryKind.REFUND_FAILED, merchant=merchant, reference_type="refund",
                 reference_id=refund_id,
                 description=f"Refund {refund_id} of {payment_id} failed; released",
                 source=_merchant_account(merchant, currency, AccountKind.RESERVED),
                 target=_merchant_account(merchant, currency, AccountKind.AVAILABLE), amount=amount)


# -- disputes --------------------------------------------------------------------------------
def post_dispute_opened(
    *, merchant: Merchant, dispute_id: str, payment_id: str, currency: str, amount: int
) -> JournalEntry:
    """Hold the disputed amount; available may go negative, as at Stripe."""
    return _move(kind=EntryKind.DISPUTE_OPENED, merchant=merchant, reference_type="dispute",
                 reference_id=dispute_id, description=f"Dispute {dispute_id} on {payment_id}",
                 source=_merchant_account(merchant, currency, AccountKind.AVAILABLE),
                 target=_merchant_account(merchant, currency, AccountKind.DISPUTED), amount=amount,
                 allow_negative=MAY_GO_NEGATIVE)


def post_dispute_won(
    *, merchant: Merchant, dispute_id: str, payment_id: str, currency: str, amount: int
) -> JournalEntry:
    return _move(kind=EntryKind.DISPUTE_WON, merchant=merchant, reference_type="dispute",
                 reference_id=dispute_id, description=f"Dispute {dispute_id} on {payment_id} won",
                 source=_merchant_account(merchant, currency, AccountKind.DISPUTED),
                 target=_merchant_account(merchant, currency, AccountKind.AVAILABLE), amount=amount)


def post_dispute_lost(
    *, merchant: Merchant, dispute_id: str, payment_id: str, provider: str, currency: str,
    amount: int,
) -> JournalEntry:
    return _move(kind=EntryKind.DISPUTE_LOST, merchant=merchant, reference_type="dispute",
                 reference_id=dispute_id,
                 description=f"Dispute {dispute_id} on {payment_id} lost; charged back",
                 source=_merchant_account(merchant, currency, AccountKind.DISPUTED),
                 target=_clearing(merchant, currency, provider), amount=amount)


# -- wallet movements ------------------------------------------------------------------------
def post_deposit_confirmed(
    *, merchant: Merchant, deposit_id: str, currency: str, amount: int
) -> JournalEntry:
    return _move(kind=EntryKind.DEPOSIT_CONFIRMED, merchant=merchant, reference_type="deposit",
                 reference_id=deposit_id, description=f"Deposit {deposit_id}",
                 source=_platform(currency, AccountKind.DEPOSITS_CLEARING),
                 target=_merchant_account(merchant, currency, AccountKind.AVAILABLE), amount=amount)


def post_payout_created(
    *, merchant: Merchant, payout_id: str, currency: str, amount: int
) -> JournalEntry:
    """Reserve the payout. Raises InsufficientFunds (409) rather than overdraw available."""
    return _move(kind=EntryKind.PAYOUT_CREATED, merchant=merchant, reference_type="payout",
                 reference_id=payout_id, description=f"Payout {payout_id}",
                 source=_merchant_account(merchant, currency, AccountKind.AVAILABLE),
                 target=_merchant_account(merchant, currency, AccountKind.RESERVED), amount=amount)


def post_payout_in_transit(
    *, merchant: Merchant, payout_id: str, currency: str, amount: int
) -> JournalEntry:
    return _move(kind=EntryKind.PAYOUT_IN_TRANSIT, merchant=merchant, reference_type="payout",
                 reference_id=payout_id, description=f"Payout {payout_id} in transit",
                 source=_merchant_account(merchant, currency, AccountKind.RESERVED),
                 target=_platform(currency, AccountKind.PAYOUTS_IN_TRANSIT),
                 amount=amount)


def _payout_holding(merchant: Merchant, payout_id: str, currency: str) -> AccountKey:
    """Where a payout's money sits now: in transit once that entry exists, else reserved.
    The caller holds the payout's row lock, so its entries cannot change meanwhile."""
    in_transit = JournalEntry.objects.filter(
        reference_type="payout", reference_id=payout_id, kind=EntryKind.PAYOUT_IN_TRANSIT,
    ).exists()
    if in_transit:
        return _platform(currency, AccountKind.PAYOUTS_IN_TRANSIT)
    return _merchant_account(merchant, currency, AccountKind.RESERVED)


def post_payout_paid(
    *, merchant: Merchant, payout_id: str, provider: str, currency: str, amount: int
) -> JournalEntry:
    return _move(kind=EntryKind.PAYOUT_PAID, merchant=merchant, reference_type="payout",
                 reference_id=payout_id, description=f"Payout {payout_id} paid",
                 source=_payout_holding(merchant, payout_id, currency),
                 target=_clearing(merchant, currency, provider), amount=amount)


def post_payout_failed(
    *, merchant: Merchant, payout_id: str, currency: str, amount: int
) -> JournalEntry:
    return _move(kind=EntryKind.PAYOUT_FAILED, merchant=merchant, reference_type="payout",
                 reference_id=payout_id, description=f"Payout {payout_id} failed; released",
                 source=_payout_holding(merchant, payout_id, currency),
                 target=_merchant_account(merchant, currency, AccountKind.AVAILABLE), amount=amount)
