"""Prove the ledger consistent: zero-sum entries, balances = Σ postings, balance_after, hash chain.

`ledger_verify()` returns a `VerifyResult` (the management command and a scheduled task render
it). Memory stays bounded for any ledger size: the sums are SQL aggregates that name only the
first bad row, and the hash chain is streamed through a server-side cursor in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import connection, transaction

from ledger.chain import GENESIS_HASH, HashedPosting, entry_hash

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
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        head = (f"ledger_verify: {self.entries} entries, {self.postings} postings, "
                f"{self.accounts} accounts: ")
        if self.ok:
            return head + "OK (zero-sum, balances, balance_after and hash chain intact)"
        lines = [head + f"{len(self.problems)} check(s) FAILED; first bad row of each:"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


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
        SELECT currency, sum(balance) FROM ledger_account
         GROUP BY currency HAVING sum(balance) <> 0 ORDER BY currency LIMIT 1""")
    if row:
        result.problems.append(Problem("trial_balance", f"currency {row[0]}",
                                       f"all account balances sum to {row[1]}, not 0"))


def _check_balance_after(result: VerifyResult) -> None:
    # Per account, postings apply in chain order: the account lock is held until COMMIT and the
    # sequence is assigned under it, so sequence order is the order the balance moved in.
    row = _first("""
        SELECT id, account_id, sequence, balance_after, running FROM (
            SELECT p.id, p.account_id, e.sequence, p.balance_after,
                   sum(p.amount) OVER (PARTITION BY p.account_id ORDER BY e.sequence
                                       ROWS UNBOUNDED PRECEDING) AS running
              FROM ledger_posting p JOIN ledger_journalentry e ON e.id = p.entry_id
        ) x WHERE balance_after <> running ORDER BY sequence, account_id LIMIT 1""")
    if row:
        result.problems.append(Problem(
            "balance_after", f"posting {row[0]} (account {row[1]}, sequence {row[2]})",
            f"balance_after {row[3]} but the running sum of the account's postings is {row[4]}"))


_CHAIN_SQL = """
    SELECT e.sequence, e.id, e.kind, e.reference_type, e.reference_id, e.merchant_id,
           e.description, e.created_at, e.prev_hash, e.hash,
           p.id, p.account_id, p.amount, p.currency, p.balance_after
      FROM ledger_journalentry e LEFT JOIN ledger_posting p ON p.entry_id = e.id
     ORDER BY e.sequence, p.account_id"""


def _check_chain(result: VerifyResult, chunk_size: int) -> None:
    """Recompute every hash in sequence order, holding one entry's postings at a time."""
    problem: Problem | None = None
    expected_sequence, expected_prev = 1, GENESIS_HASH
    current: tuple | None = None
    postings: list[HashedPosting] = []

    def close_entry() -> None:
        nonlocal problem, expected_sequence, expected_prev
        sequence, entry_id, kind, ref_type, ref_id, merchant_id, description, created_at, \
            prev_hash, stored_hash = current
        result.entries += 1
        if problem is None:
            row = _entry_row(entry_id, sequence)
            recomputed = entry_hash(
                prev_hash=prev_hash, sequence=sequence, entry_id=entry_id, kind=kind,
                reference_type=ref_type, reference_id=ref_id, merchant_id=merchant_id,
                description=description, created_at=created_at, postings=postings)
            if sequence != expected_sequence:
                problem = Problem("hash_chain", row, f"expected sequence {expected_sequence}: "
                                  "an entry is missing or was inserted out of the chain")
            elif prev_hash != expected_prev:
                problem = Problem("hash_chain", row, f"prev_hash {prev_hash[:12]}… is not the "
                                  f"hash of the previous entry ({expected_prev[:12]}…)")
            elif recomputed != stored_hash:
                problem = Problem("hash_chain", row, f"stored hash {stored_hash[:12]}… does not "
                                  f"match its content (recomputed {recomputed[:12]}…): the "
                                  "entry or one of its postings was altered")
        expected_sequence, expected_prev = sequence + 1, stored_hash

    # A server-side cursor: PostgreSQL keeps the result, Python holds one chunk at a time.
    with connection.chunked_cursor() as cursor:
        cursor.execute(_CHAIN_SQL)
        while rows := cursor.fetchmany(chunk_size):
            for row in rows:
                if current is None or row[0] != current[0]:
                    if current is not None:
                        close_entry()
                    current, postings = row[:10], []
                if row[10] is not None:
                    postings.append(HashedPosting(*row[10:15]))
                    result.postings += 1
        if current is not None:
            close_entry()
    if problem is not None:
        result.problems.append(problem)


def _run(chunk_size: int) -> VerifyResult:
    result = VerifyResult()
    _check_entries(result)
    _check_postings_match_accounts(result)
    _check_balances(result)
    _check_balance_after(result)
    _check_chain(result, chunk_size)
    result.accounts = _first("SELECT count(*) FROM ledger_account")[0]
    return result


def ledger_verify(*, chunk_size: int = DEFAULT_CHUNK_SIZE) -> VerifyResult:
    """Run every check on one consistent snapshot, so concurrent posting causes no false alarm.

    Inside a caller's transaction (a test, a shell) the checks use that transaction as it is.
    """
    if connection.in_atomic_block:
        return _run(chunk_size)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _run(chunk_size)
