"""Prove the ledger consistent: zero-sum entries, balances = Σ postings, balance_after, every
entry's digest, every account's hash chain, and the latest signed checkpoint.

`ledger_verify()` returns a `VerifyResult` (the management command and a scheduled task render
it). Memory stays bounded for any ledger size: the sums are SQL aggregates that name only the
first bad row, and the digests and chains are streamed through server-side cursors in chunks.
Without a checkpoint, a table owner who rewrites rows *and* recomputes every hash after them
goes unseen; the checkpoint (`ledger.checkpoints`) is what catches that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import connection

from ledger.chain import (
    GENESIS_HASH,
    EntryLine,
    account_label,
    entry_digest,
    micros,
    posting_hash,
)
from ledger.reports import one_snapshot

DEFAULT_CHUNK_SIZE = 5000


@dataclass(frozen=True)
class Problem:
    check: str
    row: str  # the first bad row, e.g. "journal entry txn_… (sequence 42)"
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.row}: {self.message}"


@dataclass
class VerifyResult:
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    checkpoint: str = "no checkpoint yet"
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth reading, not failures

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        head = (f"ledger_verify: {self.entries} entries, {self.postings} postings, "
                f"{self.accounts} accounts, {self.checkpoint}: ")
        notes = "".join(f"\n  note: {note}" for note in self.notes)
        if self.ok:
            return head + ("OK (zero-sum, balances, balance_after, entry digests, account "
                           "chains and checkpoint intact)") + notes
        lines = [head + f"{len(self.problems)} check(s) FAILED; first bad row of each:"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines) + notes


def _first(sql: str) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()


def _entry_row(entry_id: str, sequence: int) -> str:
    return f"journal entry {entry_id} (sequence {sequence})"


def _check_entries(result: VerifyResult) -> None:
    row = _first("""
        SELECT e.id, e.sequence, count(p.id) FROM ledger_journalentry e
          LEFT JOIN ledger_posting p ON p.entry_id = e.id
         GROUP BY e.id, e.sequence HAVING count(p.id) < 2 ORDER BY e.sequence LIMIT 1""")
    if row:
        result.problems.append(Problem("postings_per_entry", _entry_row(row[0], row[1]),
                                       f"has {row[2]} posting(s); at least two are required"))
    row = _first("""
        SELECT e.id, e.sequence, p.currency, sum(p.amount) FROM ledger_posting p
          JOIN ledger_journalentry e ON e.id = p.entry_id
         GROUP BY e.id, e.sequence, p.currency HAVING sum(p.amount) <> 0
         ORDER BY e.sequence, p.currency LIMIT 1""")
    if row:
        result.problems.append(Problem("zero_sum", _entry_row(row[0], row[1]),
                                       f"{row[2]} postings sum to {row[3]}, not 0"))


def _check_postings_match_accounts(result: VerifyResult) -> None:
    row = _first("""
        SELECT p.id, p.currency, p.merchant_id, a.id, a.currency, a.merchant_id
          FROM ledger_posting p JOIN ledger_account a ON a.id = p.account_id
         WHERE p.currency <> a.currency OR p.merchant_id IS DISTINCT FROM a.merchant_id
         ORDER BY p.created_at, p.id LIMIT 1""")
    if row:
        result.problems.append(Problem(
            "posting_account", f"posting {row[0]}",
            f"currency/merchant {row[1]}/{row[2]} differ from account {row[3]}'s "
            f"{row[4]}/{row[5]}"))


def _check_entry_owner(result: VerifyResult) -> None:
    """An entry moves one merchant's balances at most (and the platform's), and it is that
    merchant's entry."""
    row = _first("""
        SELECT e.id, e.sequence, e.merchant_id, p.id, p.merchant_id
          FROM ledger_journalentry e JOIN ledger_posting p ON p.entry_id = e.id
         WHERE p.merchant_id IS NOT NULL AND e.merchant_id IS DISTINCT FROM p.merchant_id
         ORDER BY e.sequence LIMIT 1""")
    if row:
        result.problems.append(Problem(
            "entry_owner", _entry_row(row[0], row[1]),
            f"belongs to merchant {row[2] or '(none)'} but its posting {row[3]} moves merchant "
            f"{row[4]}'s balance"))


def _check_balances(result: VerifyResult) -> None:
    row = _first("""
        SELECT a.id, a.merchant_id, a.kind, a.provider, a.currency, a.balance,
               COALESCE(s.total, 0), a.version, COALESCE(s.n, 0)
          FROM ledger_account a
          LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n
                       FROM ledger_posting GROUP BY account_id) s ON s.account_id = a.id
         WHERE a.balance <> COALESCE(s.total, 0) OR a.version <> COALESCE(s.n, 0)
         ORDER BY a.id LIMIT 1""")
    if row:
        kind = f"{row[2]}:{row[3]}" if row[3] else row[2]
        result.problems.append(Problem(
            "account_balance", f"account {row[0]} ({row[1] or 'platform'} {kind} {row[4]})",
            f"balance {row[5]} (version {row[7]}) but its {row[8]} postings sum to {row[6]}"))
    row = _first("""
        SELECT a.id, a.version, a.head_hash, p.hash FROM ledger_account a
          LEFT JOIN ledger_posting p ON p.account_id = a.id AND p.account_version = a.version
         WHERE a.head_hash IS DISTINCT FROM COALESCE(p.hash, repeat('0', 64))
         ORDER BY a.id LIMIT 1""")
    if row:
        result.problems.append(Problem(
            "account_head", f"account {row[0]}",
            f"head {row[2][:12]}… at version {row[1]} but its posting of that version hashes "
            f"to {(row[3] or 'nothing (missing)')[:12]}…"))
    row = _first("""
        SELECT currency, sum(balance) FROM ledger_account
         GROUP BY currency HAVING sum(balance) <> 0 ORDER BY currency LIMIT 1""")
    if row:
        result.problems.append(Problem("trial_balance", f"currency {row[0]}",
                                       f"all account balances sum to {row[1]}, not 0"))


def _check_balance_after(result: VerifyResult) -> None:
    # Per account, postings apply in account_version order (assigned under the account lock).
    row = _first("""
        SELECT id, account_id, account_version, balance_after, running, position FROM (
            SELECT p.id, p.account_id, p.account_version, p.balance_after,
                   sum(p.amount) OVER w AS running, row_number() OVER w AS position
              FROM ledger_posting p
            WINDOW w AS (PARTITION BY p.account_id ORDER BY p.account_version
                         ROWS UNBOUNDED PRECEDING)
        ) x WHERE balance_after <> running OR account_version <> position
        ORDER BY account_id, account_version LIMIT 1""")
    if row:
        where = f"posting {row[0]} (account {row[1]}, version {row[2]})"
        if row[2] != row[5]:
            message = f"is the account's posting number {row[5]}: a posting before it is missing"
        else:
            message = (f"balance_after {row[3]} but the running sum of the account's postings "
                       f"is {row[4]}")
        result.problems.append(Problem("balance_after", where, message))


_ENTRIES_SQL = """
    SELECT e.sequence, e.id, e.kind, e.reference_type, e.reference_id, e.merchant_id,
           e.description, e.created_at, e.hash, p.id, p.account_id, p.amount, p.currency
      FROM ledger_journalentry e LEFT JOIN ledger_posting p ON p.entry_id = e.id
     ORDER BY e.sequence, p.account_id"""

_POSTINGS_SQL = """
    SELECT p.account_id, p.account_version, p.id, p.entry_id, e.hash, p.amount, p.currency,
           p.balance_after, p.created_at, p.prev_hash, p.hash,
           COALESCE(a.merchant_id, ''), a.kind, a.provider, a.shard
      FROM ledger_posting p JOIN ledger_journalentry e ON e.id = p.entry_id
      JOIN ledger_account a ON a.id = p.account_id
     ORDER BY p.account_id, p.account_version"""


def _stream(sql: str, chunk_size: int):  # type: ignore[no-untyped-def]
    # A server-side cursor: PostgreSQL keeps the result, Python holds one chunk at a time.
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql)
        while rows := cursor.fetchmany(chunk_size):
            yield from rows


def _check_entry_digests(result: VerifyResult, chunk_size: int) -> None:
    """Recompute every entry's digest from its row and its postings, one entry at a time."""
    current: tuple | None = None
    lines: list[EntryLine] = []

    def close() -> Problem | None:
        result.entries += 1
        sequence, entry_id, kind, ref_type, ref_id, merchant_id, description, created_at, \
            stored = current
        recomputed = entry_digest(entry_id=entry_id, kind=kind, reference_type=ref_type,
                                  reference_id=ref_id, merchant_id=merchant_id,
                                  description=description, created_at=created_at, lines=lines)
        if recomputed == stored:
            return None
        return Problem("entry_digest", _entry_row(entry_id, sequence),
                       f"stored hash {stored[:12]}… does not match its content (recomputed "
                       f"{recomputed[:12]}…): the entry or one of its postings was altered")

    problem: Problem | None = None
    for row in _stream(_ENTRIES_SQL, chunk_size):
        if current is None or row[1] != current[1]:
            if current is not None:
                problem = problem or close()
            current, lines = row[:9], []
        if row[9] is not None:
            lines.append(EntryLine(row[9], row[10], row[11], row[12]))
    if current is not None:
        problem = problem or close()
    if problem is not None:
        result.problems.append(problem)


def _check_account_chains(result: VerifyResult, chunk_size: int) -> None:
    """Walk every account's chain from the genesis hash, recomputing each posting's hash."""
    problem: Problem | None = None
    account, expected_prev = None, GENESIS_HASH
    for row in _stream(_POSTINGS_SQL, chunk_size):
        account_id, version, posting_id, entry_id, entry_hash, amount, currency, \
            balance_after, created_at, prev_hash, stored, owner, kind, provider, shard = row
        result.postings += 1
        if account_id != account:
            account, expected_prev = account_id, GENESIS_HASH
        if problem is not None:
            continue
        where = f"posting {posting_id} (account {account_id}, version {version})"
        recomputed = posting_hash(
            prev_hash=prev_hash, account_id=account_id, owner=owner,
            label=account_label(kind, provider, shard), account_version=version,
            posting_id=posting_id, entry_id=entry_id, entry_hash=entry_hash, amount=amount,
            currency=currency, balance_after=balance_after, created_at_us=micros(created_at))
        if prev_hash != expected_prev:
            problem = Problem("account_chain", where,
                              f"prev_hash {prev_hash[:12]}… is not the hash of the account's "
                              f"previous posting ({expected_prev[:12]}…): a posting before it "
                              "is missing or was altered")
        elif recomputed != stored:
            problem = Problem("account_chain", where,
                              f"stored hash {stored[:12]}… does not match its content "
                              f"(recomputed {recomputed[:12]}…): the posting or its entry was "
                              "altered")
        expected_prev = stored
    if problem is not None:
        result.problems.append(problem)


def _check_checkpoint(result: VerifyResult) -> None:
    from ledger.checkpoints import checkpoint_problems

    document, problems, result.notes = checkpoint_problems()
    if document is not None:
        result.checkpoint = (f"checkpoint {document.number} of {document.body['created_at']} "
                             f"({document.source.split(' ')[0]})")
    result.problems += [Problem("checkpoint", f"checkpoint {document.number}", problem)
                        for problem in problems if document is not None]


def _run(chunk_size: int) -> VerifyResult:
    result = VerifyResult()
    _check_entries(result)
    _check_postings_match_accounts(result)
    _check_entry_owner(result)
    _check_balances(result)
    _check_balance_after(result)
    _check_entry_digests(result, chunk_size)
    _check_account_chains(result, chunk_size)
    _check_checkpoint(result)
    result.accounts = _first("SELECT count(*) FROM ledger_account")[0]
    return result


def ledger_verify(*, chunk_size: int = DEFAULT_CHUNK_SIZE) -> VerifyResult:
    """Run every check on one consistent snapshot, so concurrent posting causes no false alarm.

    Inside a caller's transaction (a test, a shell) the checks use that transaction as it is.
    """
    from ledger.checkpoints import CHECKPOINT_LOCK_KEY

    # Shared with other verifiers, exclusive of checkpoint_create: a checkpoint committed
    # between this snapshot and the read of its file would look like deleted rows.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock_shared(%s)", [CHECKPOINT_LOCK_KEY])
    try:
        with one_snapshot():
            return _run(chunk_size)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_shared(%s)", [CHECKPOINT_LOCK_KEY])
