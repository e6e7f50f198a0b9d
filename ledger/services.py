"""Every write to the ledger: accounts (race-safe get-or-create), posting one entry or a batch,
reversing one.

Locking inside `entry_post` / `entries_post`, the only writers of entries and postings: the
affected accounts, `SELECT … FOR NO KEY UPDATE` in ascending id order (no deadlocks between
entries; NO KEY so that concurrent FK checks from new postings are not blocked). Nothing else:
there is no global lock. Each posting is chained to the previous posting *of its account*
(`ledger.chain`), whose head is read under that account's lock, so entries on disjoint
accounts commit in parallel and the chain stays exact. (Until migration 0003 one global chain
was extended under an advisory lock held to COMMIT: one commit at a time for the whole system.)

Round trips (tests/test_ledger_round_trips.py counts them): 2 executes, each sending several
statements as one simple query (`_run`), each with its own READ COMMITTED snapshot: (1) accounts
named by key created if missing + account locks + replay lookup + clock and sequence numbers,
(2) entry INSERT + postings INSERT. Outside a transaction BEGIN rides in (1) and COMMIT in (2);
inside a caller's transaction its savepoint's SAVEPOINT and RELEASE do. It needs
client-side binding (Django's default for psycopg 3); with OPTIONS server_side_binding every post
would fail loudly ("cannot insert multiple commands into a prepared statement"), never silently.

Callers run these inside their own transaction (READ COMMITTED, Django's default), ideally as
the last step: the account locks are held until COMMIT, so a hot account (a merchant's
`pending`) is busy for the rest of the caller's transaction.

Hot platform accounts: `provider_clearing:<provider>` is credited or debited by every capture,
refund and payout, so it is split into LEDGER_CLEARING_SHARDS rows chosen by merchant
(`clearing_key`), summed on read. A merchant's own accounts are one row each; a
merchant that posts faster than one row allows batches its entries with `entries_post`.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from django.conf import settings
from django.db import Error, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Model

from core.errors import InsufficientFunds
from core.models import Merchant
from core.money import CURRENCIES, format_amount
from ledger.chain import EntryLine, account_label, entry_digest, micros, posting_hash
from ledger.models import (
    ENTRY_KINDS_MAY_OVERDRAW_AVAILABLE,
    MERCHANT_KINDS,
    NO_OVERDRAFT_KINDS,
    Account,
    AccountKind,
    EntryKind,
    JournalEntry,
    Posting,
)

Line = tuple["Account | AccountKey", int]
Ref = "int | AccountKey"  # an account by id (a saved Account) or by key
DEFAULT_CLEARING_SHARDS = 16
MAX_SHARD = 32_767  # the column is a PositiveSmallIntegerField


@dataclass(frozen=True)
class EntrySpec:
    """One entry to post: the arguments of `entry_post`, for `entries_post`."""

    kind: str
    lines: Sequence[Line]
    reference_type: str
    reference_id: str
    description: str = ""
    merchant: Merchant | None = None
    allow_negative: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class AccountKey:
    """An account by what it is rather than its row: `entry_post` finds it, creating it on first
    use, inside the round trip that locks it (no lookup before posting)."""

    merchant_id: str | None
    currency: str
    kind: str
    provider: str = ""
    shard: int = 0

    def __post_init__(self) -> None:
        """Every key is checked when it is made, so a bad one never reaches SQL (ValueError:
        a programming error)."""
        if self.kind not in AccountKind.values:
            raise ValueError(f"unknown account kind {self.kind!r}")
        if self.currency not in CURRENCIES:
            raise ValueError(f"unknown currency {self.currency!r}")
        if (self.merchant_id is None) == (self.kind in MERCHANT_KINDS):
            owner = ("a merchant" if self.kind in MERCHANT_KINDS
                     else "the platform (merchant=None)")
            raise ValueError(f"{self.kind} accounts belong to {owner}")
        if bool(self.provider) != (self.kind == AccountKind.PROVIDER_CLEARING):
            raise ValueError("provider is required for provider_clearing accounts and only for "
                             "them")
        if isinstance(self.shard, bool) or not isinstance(self.shard, int) \
                or not 0 <= self.shard <= MAX_SHARD:
            raise ValueError(f"shard {self.shard!r} must be an int from 0 to {MAX_SHARD}")
        if self.shard and self.merchant_id is not None:
            raise ValueError("only platform accounts are split into shards")


def account_key(
    *, merchant: Merchant | None = None, currency: str, kind: str, provider: str = "",
    shard: int = 0,
) -> AccountKey:
    """Name an account (checked: see AccountKey)."""
    return AccountKey(merchant.pk if merchant is not None else None, currency, kind, provider,
                      shard)


def clearing_shard(merchant: Merchant | None) -> int:
    """Which row of a split platform account a merchant's movements use: stable per merchant, so
    one merchant's entries keep to one row and different merchants spread over all of them."""
    shards = int(getattr(settings, "LEDGER_CLEARING_SHARDS", DEFAULT_CLEARING_SHARDS))
    if merchant is None or shards <= 1:
        return 0
    return zlib.crc32(merchant.pk.encode()) % shards


def clearing_key(*, merchant: Merchant | None, currency: str, provider: str) -> AccountKey:
    """`provider_clearing:<provider>` for this merchant's movements (its shard)."""
    return account_key(currency=currency, kind=AccountKind.PROVIDER_CLEARING, provider=provider,
                       shard=clearing_shard(merchant))


def account_for(
    *, merchant: Merchant | None = None, currency: str, kind: str, provider: str = "",
    shard: int = 0,
) -> Account:
    """The account for (merchant, currency, kind, provider, shard), created on first use."""
    return account_row(account_key(merchant=merchant, currency=currency, kind=kind,
                                   provider=provider, shard=shard))


def account_row(key: AccountKey) -> Account:
    """The row a key names (`account_key`, or `clearing_key` for a merchant's clearing shard),
    created on first use.

    Race-safe without a savepoint: INSERT … ON CONFLICT DO NOTHING waits for a concurrent
    inserter to commit, after which the re-read (a new READ COMMITTED snapshot) finds its row.
    Posting does not need this (lines may name an `AccountKey`); reads and tests do.
    """
    columns = {"merchant_id": key.merchant_id, "currency": key.currency, "kind": key.kind,
               "provider": key.provider, "shard": key.shard}
    rows = Account.objects.filter(**columns)
    account = rows.first()
    if account is None:
        Account.objects.bulk_create([Account(**columns)], ignore_conflicts=True)
        account = rows.get()
    return account


def _ref(account: Account | AccountKey) -> tuple[int | AccountKey, AccountKey]:
    """(how to find it: its id, or its key; its key, for owner and currency checks)."""
    if isinstance(account, AccountKey):
        return account, account
    if account.pk is None:
        raise ValueError("lines need saved accounts (account_for) or an AccountKey")
    return account.pk, AccountKey(account.merchant_id, account.currency, account.kind,
                                  account.provider, account.shard)


def _validate(
    *, kind: str, lines: Sequence[Line], reference_type: str, reference_id: str,
    merchant: Merchant | None, allow_negative: frozenset[str],
) -> dict[int | AccountKey, int]:
    """Programming errors, so ValueError (a 500), never a client-facing error."""
    if kind not in EntryKind.values:
        raise ValueError(f"unknown entry kind {kind!r}")
    if not reference_type or not reference_id:
        raise ValueError("an entry needs the business object it explains (reference_type/_id)")
    if len(lines) < 2:
        raise ValueError("a journal entry needs at least two lines")
    if not allow_negative <= {AccountKind.AVAILABLE.value}:
        raise ValueError("only `available` may be allowed to go negative; `reserved` never")
    if allow_negative and kind not in ENTRY_KINDS_MAY_OVERDRAW_AVAILABLE:
        raise ValueError(f"{kind} entries may not overdraw `available` (the database refuses)")
    amounts: dict[int | AccountKey, int] = {}
    seen: set[AccountKey] = set()
    totals: dict[str, int] = defaultdict(int)
    for account, amount in lines:
        ref, key = _ref(account)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
            raise ValueError(f"amount {amount!r} must be a non-zero int in minor units")
        if key in seen or ref in amounts:
            raise ValueError(f"account {ref} appears twice; net its lines first")
        if merchant is not None and key.merchant_id not in (None, merchant.pk):
            raise ValueError(f"account {ref} belongs to another merchant")
        seen.add(key)
        amounts[ref] = amount
        totals[key.currency] += amount
    unbalanced = {currency: total for currency, total in totals.items() if total}
    if unbalanced:
        raise ValueError(f"lines do not sum to zero per currency: {unbalanced}")
    return amounts


def _run(cursor: CursorWrapper, statements: Sequence[str],
         params: Sequence[object]) -> list[list[tuple] | None]:
    """Run `statements` in ONE round trip; return each one's rows (None for a command).

    Django's psycopg backend binds parameters client-side (psycopg.ClientCursor; settings do not
    set OPTIONS server_side_binding), so several statements go to PostgreSQL as one simple
    query. Each still takes its own READ COMMITTED snapshot when it starts, i.e. after the
    statement before it has finished (and been granted its locks).
    """
    cursor.execute("; ".join(statements), params)
    results: list[list[tuple] | None] = []
    while True:
        results.append(cursor.fetchall() if cursor.description is not None else None)
        if not cursor.nextset():
            return results


@cache
def _insert_sql(model: type[Model], rows: int) -> str:
    """A multi-row INSERT of every concrete column, in `_meta` order (as bulk_create writes)."""
    fields = model._meta.concrete_fields
    columns = ", ".join(f.column for f in fields)
    values = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * rows)
    # Names come from the model, values are bound: nothing from the caller enters the SQL text.
    return f"INSERT INTO {model._meta.db_table} ({columns}) VALUES {values}"  # noqa: S608


def _insert_params(instances: Sequence[Model]) -> list[object]:
    return [field.get_db_prep_save(field.pre_save(instance, True), connection)
            for instance in instances for field in instance._meta.concrete_fields]


_ENTRY_FIELDS = JournalEntry._meta.concrete_fields
_KEYS = ("unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[]) "
         "AS k(owner, ccy, kind, provider, shard)")
# Accounts named by key that do not exist yet are created first (ON CONFLICT DO NOTHING waits for
# a concurrent creator to commit); NOT EXISTS spares the id sequence for the usual case.
# One account by key, as a scalar subquery per key: always a parameterized scan of the
# expression index ledger_account_key, whatever the planner believes of the table's size. (A
# join or anti-join of the keys with the table was planned as a scan of the whole table or
# index when its statistics were stale, e.g. in a long transaction full of rolled-back rows.)
_BY_KEY = ("(SELECT a.id FROM ledger_account a WHERE COALESCE(a.merchant_id, '') = "
           "COALESCE(k.owner, '') AND a.currency = k.ccy AND a.kind = k.kind "
           "AND a.provider = k.provider AND a.shard = k.shard)")
# Accounts named by key that do not exist yet are created first (ON CONFLICT DO NOTHING waits for
# a concurrent creator to commit); the look-up spares the id sequence for the usual case.
_ENSURE_SQL = (
    "INSERT INTO ledger_account (merchant_id, currency, kind, provider, shard, balance, version, "  # noqa: S608
    "head_hash, created_at) SELECT k.owner, k.ccy, k.kind, k.provider, k.shard, 0, 0, "
    f"repeat('0', 64), now() FROM {_KEYS} WHERE {_BY_KEY} IS NULL ON CONFLICT DO NOTHING"
)
# By id or by key, in id order: no deadlocks between entries. The keys become ids in an ARRAY()
# evaluated once before any row is locked, so the locked scan is `id = ANY(constant)`: when a
# row it waits for was updated meanwhile, PostgreSQL's recheck of that condition still holds.
# (An OR of ids and keys in one WHERE scanned the whole table; a semi-join let the recheck drop
# rows that a concurrent posting had just updated.) A separate statement after _ENSURE_SQL, so
# its snapshot sees the accounts it made.
_LOCK_SQL = (
    "SELECT id, kind, balance, currency, merchant_id, version, head_hash, provider, shard "  # noqa: S608
    f"FROM ledger_account WHERE id = ANY(%s::bigint[] || ARRAY(SELECT {_BY_KEY} FROM {_KEYS})) "
    "ORDER BY id FOR NO KEY UPDATE"
)
# A separate statement AFTER the locks on purpose: its READ COMMITTED snapshot is taken once
# they are granted, and a concurrent post of the same event touches the same accounts, so by
# then it has committed and this read sees it. Returns one row per stored posting.
_ENTRY_COLUMNS = ", ".join(f"e.{f.column}" for f in _ENTRY_FIELDS)  # model names, no input
_REPLAY_SQL = (
    f"SELECT {_ENTRY_COLUMNS}, p.account_id, p.amount "  # noqa: S608
    "FROM unnest(%s::text[], %s::text[], %s::text[]) AS r(rtype, rid, rkind) "
    # LATERAL: a parameterized probe of the (reference_type, reference_id, kind) unique index
    # per event, whatever the statistics say.
    "JOIN LATERAL (SELECT * FROM ledger_journalentry x WHERE x.reference_type = r.rtype "
    "AND x.reference_id = r.rid AND x.kind = r.rkind) e ON true "
    "LEFT JOIN ledger_posting p ON p.entry_id = e.id"
)
# The database clock (not the app server's), and one sequence number per entry.
_CLOCK_SQL = ("SELECT clock_timestamp(), array(SELECT nextval('ledger_entry_sequence') "
              "FROM generate_series(1, %s))")
# Inside a caller's transaction: a savepoint of our own (what a nested atomic() would take),
# its SAVEPOINT and RELEASE riding in the first and last round trips instead of two more.
_SAVEPOINT = "ledger_entry_post"


@dataclass
class _Pending:
    """One validated spec on its way into the database: `lines` by id or key until the accounts
    are locked, then `amounts` by account id."""

    spec: EntrySpec
    lines: dict[int | AccountKey, int]
    merchant_id: str | None
    amounts: dict[int, int] = field(default_factory=dict)


def _replays(rows: list[tuple], pending: list[_Pending]) -> dict[int, JournalEntry]:
    """{index in `pending`: stored entry} for specs already posted with the same lines."""
    n = len(_ENTRY_FIELDS)
    attnames = [f.attname for f in _ENTRY_FIELDS]
    columns = {name: i for i, name in enumerate(attnames)}
    stored: dict[tuple[str, str, str], tuple[tuple, dict[int, int]]] = {}
    for row in rows:
        key = (row[columns["reference_type"]], row[columns["reference_id"]], row[columns["kind"]])
        _row, amounts = stored.setdefault(key, (row[:n], {}))
        if row[n] is not None:
            amounts[row[n]] = row[n + 1]
    found: dict[int, JournalEntry] = {}
    for index, item in enumerate(pending):
        spec = item.spec
        hit = stored.get((spec.reference_type, spec.reference_id, spec.kind))
        if hit is None:
            continue
        existing = JournalEntry.from_db(connection.alias, attnames, hit[0])
        if hit[1] != item.amounts:
            raise ValueError(
                f"{existing.reference_type} {existing.reference_id} already has a "
                f"{existing.kind} entry {existing.id} with different postings")
        found[index] = existing
    return found


def _check_overdraft(kind: str, balance: int, amount: int, currency: str,
                     allow_negative: frozenset[str]) -> None:
    if (amount < 0 and balance + amount < 0 and kind in NO_OVERDRAFT_KINDS
            and kind not in allow_negative):
        raise InsufficientFunds(
            f"Insufficient funds: the {kind} balance is {format_amount(balance, currency)} and "
            f"this needs {format_amount(-amount, currency)}.",
            param="amount",
        )


def _build(
    pending: list[_Pending], locked: list[tuple], created_at: object, sequences: list[int],
) -> tuple[list[JournalEntry], list[Posting]]:
    """Entries and chained postings, in order, from the locked accounts' balances and heads."""
    state = {pk: [kind, balance, currency, merchant_id, version, head,
                  account_label(kind, provider, shard)]
             for pk, kind, balance, currency, merchant_id, version, head, provider, shard
             in locked}
    entries: list[JournalEntry] = []
    postings: list[Posting] = []
    created_us = micros(created_at)  # type: ignore[arg-type]
    for item, sequence in zip(pending, sequences, strict=True):
        spec = item.spec
        entry = JournalEntry(
            sequence=sequence, kind=spec.kind, description=spec.description,
            reference_type=spec.reference_type, reference_id=spec.reference_id,
            merchant_id=item.merchant_id, created_at=created_at,
        )
        mine = [Posting(entry=entry, account_id=pk, amount=item.amounts[pk],
                        merchant_id=state[pk][3], currency=state[pk][2], created_at=created_at)
                for pk in sorted(item.amounts)]
        entry.hash = entry_digest(
            entry_id=entry.id, kind=spec.kind, reference_type=spec.reference_type,
            reference_id=spec.reference_id, merchant_id=entry.merchant_id,
            description=spec.description, created_at=created_at,  # type: ignore[arg-type]
            lines=[EntryLine(p.id, p.account_id, p.amount, p.currency) for p in mine])
        for posting in mine:
            account = state[posting.account_id]
            kind, balance, currency, owner, version, head, label = account
            _check_overdraft(kind, balance, posting.amount, currency, spec.allow_negative)
            posting.balance_after = balance + posting.amount
            posting.account_version = version + 1
            posting.prev_hash = head
            posting.hash = posting_hash(
                prev_hash=head, account_id=posting.account_id, owner=owner or "", label=label,
                account_version=posting.account_version, posting_id=posting.id,
                entry_id=entry.id, entry_hash=entry.hash, amount=posting.amount,
                currency=currency, balance_after=posting.balance_after, created_at_us=created_us)
            account[1], account[4], account[5] = posting.balance_after, version + 1, posting.hash
        entries.append(entry)
        postings.extend(mine)
    return entries, postings


# How _post_many brackets its two round trips: inside a caller's transaction, a savepoint of
# its own; in autocommit, a transaction of its own whose BEGIN and COMMIT ride in them too.
_SAVEPOINT_MODE = ([f"SAVEPOINT {_SAVEPOINT}"], [f"RELEASE SAVEPOINT {_SAVEPOINT}"],
                   [f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}", f"RELEASE SAVEPOINT {_SAVEPOINT}"])
_OWN_MODE = (["BEGIN"], ["COMMIT"], ["ROLLBACK"])


def _post_many(pending: list[_Pending], *, mode: tuple[list[str], list[str], list[str]]
               ) -> list[JournalEntry]:
    """The two round trips of entry_post / entries_post, bracketed by `mode`."""
    begin, release, undo = mode
    refs = {ref for item in pending for ref in item.lines}
    account_ids = sorted(ref for ref in refs if isinstance(ref, int))
    account_keys = sorted((ref for ref in refs if isinstance(ref, AccountKey)),
                          key=lambda k: (k.merchant_id or "", k.currency, k.kind, k.provider,
                                         k.shard))
    key_columns = [[getattr(k, name) for k in account_keys]
                   for name in ("merchant_id", "currency", "kind", "provider", "shard")]
    ensure = [_ENSURE_SQL] if account_keys else []
    events = [(item.spec.reference_type, item.spec.reference_id, item.spec.kind)
              for item in pending]
    with connection.cursor() as cursor:
        try:
            *_, locked, replay, ((created_at, sequences),) = _run(
                cursor, [*begin, *ensure, _LOCK_SQL, _REPLAY_SQL, _CLOCK_SQL],
                [*(key_columns if ensure else []), account_ids, *key_columns,
                 [e[0] for e in events], [e[1] for e in events], [e[2] for e in events],
                 len(pending)])
            _resolve(pending, locked)
            replayed = _replays(replay, pending) if replay else {}
            fresh = [item for index, item in enumerate(pending) if index not in replayed]
            entries, postings = _build(fresh, locked, created_at, sequences[:len(fresh)])
            if entries:
                _run(cursor, [_insert_sql(JournalEntry, len(entries)),
                              _insert_sql(Posting, len(postings)), *release],
                     _insert_params([*entries, *postings]))
            elif release:
                _run(cursor, release, [])
        except BaseException:
            try:
                _run(cursor, undo, [])
            except Error:
                if mode is _SAVEPOINT_MODE:
                    # As atomic() does when its savepoint rollback fails: the caller's
                    # transaction can only be rolled back now.
                    transaction.set_rollback(True)
            raise
    for entry in entries:
        entry._state.adding, entry._state.db = False, connection.alias
    made = iter(entries)
    return [replayed[index] if index in replayed else next(made)
            for index in range(len(pending))]


def _resolve(pending: list[_Pending], locked: list[tuple]) -> None:
    """Turn every line's id or key into a locked account id."""
    by_id = {row[0]: row for row in locked}
    by_key = {AccountKey(merchant_id, currency, kind, provider, shard): pk
              for pk, kind, _b, currency, merchant_id, _v, _h, provider, shard in locked}
    missing = []
    for item in pending:
        for ref, amount in item.lines.items():
            pk = (ref if ref in by_id else None) if isinstance(ref, int) else by_key.get(ref)
            if pk is None:
                missing.append(ref)
            else:
                item.amounts[pk] = amount
    if missing:
        raise ValueError(f"accounts {missing} do not exist (rolled back?)")


def _prepare(spec: EntrySpec) -> _Pending:
    lines = _validate(kind=spec.kind, lines=spec.lines, reference_type=spec.reference_type,
                      reference_id=spec.reference_id, merchant=spec.merchant,
                      allow_negative=spec.allow_negative)
    merchant_id = spec.merchant.pk if spec.merchant is not None else None
    owners = {_ref(account)[1].merchant_id for account, _ in spec.lines} - {None}
    if len(owners) > 1:
        raise ValueError(f"an entry moves one merchant's balances at most, not {sorted(owners)}'s "
                         "(PostgreSQL refuses it too)")
    if merchant_id is None and owners:
        # An entry moving one merchant's balances is that merchant's (the trigger then checks
        # every posting against it; ledger_verify too).
        merchant_id = next(iter(owners))
    return _Pending(EntrySpec(spec.kind, spec.lines, spec.reference_type, spec.reference_id,
                              spec.description[:500], spec.merchant, spec.allow_negative),
                    lines, merchant_id)


def _post(pending: list[_Pending]) -> list[JournalEntry]:
    if connection.in_atomic_block:
        return _post_many(pending, mode=_SAVEPOINT_MODE)
    connection.ensure_connection()
    if connection.get_autocommit():
        return _post_many(pending, mode=_OWN_MODE)
    with transaction.atomic():  # autocommit switched off by the caller: Django's own way
        return _post_many(pending, mode=_SAVEPOINT_MODE)


def entry_post(
    *, kind: str, lines: Sequence[Line], reference_type: str, reference_id: str,
    description: str = "", merchant: Merchant | None = None,
    allow_negative: frozenset[str] = frozenset(),
) -> JournalEntry:
    """Post one balanced entry: lock the accounts, check overdrafts, chain, insert.

    `lines` are (account, signed amount) pairs, one per account, summing to zero per currency.
    `available` and `reserved` accounts may not end below zero from a debit, unless the
    account kind is in `allow_negative` — only `available`, and only for refund, dispute and
    reversal entries, which PostgreSQL also enforces; `reserved` never goes negative.
    Posting the same (reference_type, reference_id, kind) again with the same lines returns the
    first entry, so a replayed webhook or task posts nothing twice.

    Raises InsufficientFunds (409) on an overdraft, ValueError on malformed lines.
    """
    spec = EntrySpec(kind=kind, lines=lines, reference_type=reference_type,
                     reference_id=reference_id, description=description, merchant=merchant,
                     allow_negative=allow_negative)
    return _post([_prepare(spec)])[0]


def entries_post(specs: Sequence[EntrySpec]) -> list[JournalEntry]:
    """Post many entries under one pass of account locks and two round trips.

    Each entry is still its own (its own digest, postings and exact `balance_after`, chained in
    list order), so the result is what posting them one by one in that order would give; specs
    already posted are returned as stored (idempotent, like `entry_post`). All or nothing: an
    overdraft in any entry raises InsufficientFunds and posts none of them.
    """
    if not specs:
        return []
    pending = [_prepare(spec) for spec in specs]
    keys = [(p.spec.reference_type, p.spec.reference_id, p.spec.kind) for p in pending]
    if len(set(keys)) != len(keys):
        raise ValueError("a batch names the same (reference_type, reference_id, kind) twice")
    return _post(pending)


def entry_reverse(*, entry: JournalEntry, reason: str) -> JournalEntry:
    """Undo an entry with its mirror image; entries and postings themselves never change.

    A reversal may take `available` negative (the money already moved on) but never
    `reserved`: reversing a payout reservation whose funds were paid out fails instead.
    """
    if not reason:
        raise ValueError("a reversal needs a reason")
    lines = [(posting.account, -posting.amount)
             for posting in entry.postings.select_related("account").order_by("account_id")]
    return entry_post(
        kind=EntryKind.REVERSAL, lines=lines, reference_type="journal_entry",
        reference_id=entry.id, description=f"Reversal of {entry.id}: {reason}",
        merchant=entry.merchant, allow_negative=frozenset({AccountKind.AVAILABLE.value}),
    )
