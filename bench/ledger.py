"""Scenario 3: 2-leg transfers through `ledger.services.entry_post`, and its two baselines.

Shapes: *spread* moves money between two random accounts of 1,000 (merchant `pending`
accounts, which may go negative, so no transfer is refused); *hot* credits one merchant's
account from a random other, as when every capture of a big merchant lands on one balance.
Each shape runs with 8 and 32 concurrent client processes.

Baselines, measured in the same run and interleaved with it:
- *raw SQL floor*: the same transaction with psycopg and no ORM, batched as entry_post batches
  it (several statements in one execute, client-side binding): lock both accounts FOR NO KEY
  UPDATE in id order; take the chain's advisory lock and read the chain head (one round trip);
  INSERT the entry and both postings (one round trip; the posting trigger updates the balances,
  exactly as for entry_post); COMMIT. Four round trips, as entry_post's four. It writes the
  same tables under the same triggers, so the chain stays valid and the gates check it too. It
  skips what entry_post adds in Python: validation, the ORM, and the replay lookup, which in
  entry_post rides in the account locks' round trip as a second statement.
- *django-hordak 2.0*: `Account.transfer_to` inside `transaction.atomic()`, in its own database
  and process tree (bench/hordak_bench.py), so its tables never enter this project.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from typing import Any

from bench import gates
from bench.clients import Operation, OperationFactory, run_clients
from bench.runtime import ROOT, Plan, child_env, database_url
from bench.stats import median, ratio

SHAPES = ("spread", "hot")
ENTRY_KIND = "adjustment"
REFERENCE_TYPE = "bench"
COLLAPSE_THRESHOLD = 0.7  # hot with 32 clients below 70 % of hot with 8: "collapse"


def accounts_create(count: int) -> list[int]:
    """`count` merchants with one USD `pending` account each; returns the account ids."""
    from core.services import merchant_create
    from ledger.models import AccountKind
    from ledger.services import account_for

    merchants = [merchant_create(name=f"Bench ledger merchant {i}")[0] for i in range(count)]
    return [account_for(merchant=m, currency="usd", kind=AccountKind.PENDING).pk
            for m in merchants]


def _pairs(rng: random.Random, ids: list[int], shape: str) -> tuple[int, int]:
    """(debited, credited) account ids: two distinct random ones, or a random one → the hot."""
    if shape == "hot":
        return rng.choice(ids[1:]), ids[0]
    source, target = rng.sample(ids, 2)
    return source, target


def entry_post_factory(ids: list[int], shape: str, tag: str) -> OperationFactory:
    def factory(index: int) -> Operation:
        from ledger.models import Account
        from ledger.services import entry_post

        accounts = {a.pk: a for a in Account.objects.filter(pk__in=ids)}
        rng = random.Random(f"{tag}-{index}")

        def transfer(sequence: int) -> None:
            source, target = _pairs(rng, ids, shape)
            amount = rng.randint(1, 10_000)
            entry_post(kind=ENTRY_KIND, lines=[(accounts[source], -amount),
                                               (accounts[target], amount)],
                       reference_type=REFERENCE_TYPE, reference_id=f"{tag}-{index}-{sequence}")

        return transfer

    return factory


_LOCK_SQL = ("SELECT id, balance, merchant_id, currency FROM ledger_account "
             "WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE")
# The chain lock and the head in one round trip, two statements, as in ledger.services: the
# head's snapshot is taken after the lock is granted.
_CHAIN_SQL = ("SELECT pg_advisory_xact_lock(%s); "
              "SELECT clock_timestamp(), last.sequence, last.hash FROM (VALUES (1)) AS one(x) "
              "LEFT JOIN (SELECT sequence, hash FROM ledger_journalentry "
              "ORDER BY sequence DESC LIMIT 1) AS last ON true")
_ENTRY_SQL = ("INSERT INTO ledger_journalentry (id, sequence, kind, description, reference_type, "
              "reference_id, merchant_id, created_at, prev_hash, hash) "
              "VALUES (%s, %s, %s, '', %s, %s, NULL, %s, %s, %s)")
# The entry and its postings in one round trip, two statements (not a CTE: the posting trigger
# must see the entry row), as in ledger.services.
_INSERT_SQL = "; ".join((
    _ENTRY_SQL,
    "INSERT INTO ledger_posting (id, entry_id, account_id, merchant_id, amount, currency, "
    "balance_after, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s), "
    "(%s, %s, %s, %s, %s, %s, %s, %s)"))


def _connect() -> Any:
    """A connection that binds client-side, like Django's backend: several statements per
    execute (server-side binding allows one)."""
    import psycopg

    return psycopg.connect(os.environ["DATABASE_URL"], cursor_factory=psycopg.ClientCursor)


def _chain_head(cur: Any, lock_key: int) -> tuple[Any, ...]:
    """Take the chain lock and read (clock, last sequence, last hash) in one round trip."""
    cur.execute(_CHAIN_SQL, [lock_key])
    cur.nextset()
    return cur.fetchone()


def raw_sql_factory(ids: list[int], shape: str, tag: str) -> OperationFactory:
    def factory(index: int) -> Operation:
        from core.ids import new_id
        from ledger.chain import GENESIS_HASH, HashedPosting, entry_hash
        from ledger.services import CHAIN_LOCK_KEY

        conn = _connect()
        rng = random.Random(f"{tag}-{index}")

        def transfer(sequence: int) -> None:
            source, target = _pairs(rng, ids, shape)
            amount = rng.randint(1, 10_000)
            amounts = {source: -amount, target: amount}
            reference_id = f"{tag}-{index}-{sequence}"
            try:
                with conn.cursor() as cur:
                    locked = cur.execute(_LOCK_SQL, [sorted(amounts)]).fetchall()
                    created_at, last_sequence, last_hash = _chain_head(cur, CHAIN_LOCK_KEY)
                    entry_id, prev_hash = new_id("txn"), last_hash or GENESIS_HASH
                    entry_sequence = (last_sequence or 0) + 1
                    postings = [HashedPosting(new_id("bt"), pk, amounts[pk], currency,
                                              balance + amounts[pk])
                                for pk, balance, _merchant, currency in locked]
                    digest = entry_hash(
                        prev_hash=prev_hash, sequence=entry_sequence, entry_id=entry_id,
                        kind=ENTRY_KIND, reference_type=REFERENCE_TYPE,
                        reference_id=reference_id, merchant_id=None, description="",
                        created_at=created_at, postings=postings)
                    values: list[Any] = [entry_id, entry_sequence, ENTRY_KIND, REFERENCE_TYPE,
                                         reference_id, created_at, prev_hash, digest]
                    for posting, (_pk, _balance, merchant_id, _currency) in zip(
                            postings, locked, strict=True):
                        values += [posting.id, entry_id, posting.account_id, merchant_id,
                                   posting.amount, posting.currency, posting.balance_after,
                                   created_at]
                    cur.execute(_INSERT_SQL, values)
                conn.commit()
            except Exception:
                conn.rollback()
                raise

        return transfer

    return factory


_POSTING_SQL = ("INSERT INTO ledger_posting (id, entry_id, account_id, merchant_id, amount, "
                "currency, balance_after, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
BATCH_SIZE = 16


def raw_sql_batch_factory(ids: list[int], shape: str, tag: str) -> OperationFactory:
    """The batching design, as a raw SQL prototype: one transaction posts BATCH_SIZE transfers
    under ONE acquisition of the account locks and the chain lock (a ledger poster draining a
    queue of transfer intents would do this). Each entry is still its own chained, balanced
    entry with exact balance_after values, so the triggers and ledger_verify check it as usual.
    One operation is one batch: the caller multiplies the rate by BATCH_SIZE."""

    def factory(index: int) -> Operation:
        from core.ids import new_id
        from ledger.chain import GENESIS_HASH, HashedPosting, entry_hash
        from ledger.services import CHAIN_LOCK_KEY

        conn = _connect()
        rng = random.Random(f"{tag}-{index}")

        def batch(sequence: int) -> None:
            transfers = [(_pairs(rng, ids, shape), rng.randint(1, 10_000))
                         for _ in range(BATCH_SIZE)]
            touched = sorted({pk for pair, _amount in transfers for pk in pair})
            try:
                with conn.cursor() as cur:
                    state = {pk: [balance, merchant_id, currency] for pk, balance, merchant_id,
                             currency in cur.execute(_LOCK_SQL, [touched]).fetchall()}
                    created_at, last_sequence, last_hash = _chain_head(cur, CHAIN_LOCK_KEY)
                    prev_hash, entry_sequence = last_hash or GENESIS_HASH, last_sequence or 0
                    entries: list[tuple] = []
                    postings: list[tuple] = []
                    for number, ((source, target), amount) in enumerate(transfers):
                        entry_sequence += 1
                        entry_id = new_id("txn")
                        reference_id = f"{tag}-{index}-{sequence}-{number}"
                        lines = []
                        for pk, delta in sorted(((source, -amount), (target, amount))):
                            state[pk][0] += delta
                            lines.append(HashedPosting(new_id("bt"), pk, delta, state[pk][2],
                                                       state[pk][0]))
                        digest = entry_hash(
                            prev_hash=prev_hash, sequence=entry_sequence, entry_id=entry_id,
                            kind=ENTRY_KIND, reference_type=REFERENCE_TYPE,
                            reference_id=reference_id, merchant_id=None, description="",
                            created_at=created_at, postings=lines)
                        entries.append((entry_id, entry_sequence, ENTRY_KIND, REFERENCE_TYPE,
                                        reference_id, created_at, prev_hash, digest))
                        postings += [(p.id, entry_id, p.account_id, state[p.account_id][1],
                                      p.amount, p.currency, p.balance_after, created_at)
                                     for p in lines]
                        prev_hash = digest
                    # In insertion order, so each posting trigger sees the balance before it.
                    cur.executemany(_ENTRY_SQL, entries)
                    cur.executemany(_POSTING_SQL, postings)
                conn.commit()
            except Exception:
                conn.rollback()
                raise

        return batch

    return factory


def _hordak(command: str, payload: dict[str, Any]) -> Any:
    env = child_env(DJANGO_SETTINGS_MODULE="bench.hordak_settings",
                    DATABASE_URL=database_url(hordak_database()))
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "bench.hordak_bench", command], cwd=ROOT, env=env,
        input=json.dumps(payload).encode(), capture_output=True, check=False, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode()[-2000:])
    return json.loads(result.stdout)


def hordak_database() -> str:
    from bench.runtime import HORDAK_DATABASE_SUFFIX, bench_database_name

    return bench_database_name() + HORDAK_DATABASE_SUFFIX


def hordak_setup(accounts: int) -> str | None:
    """Create and migrate hordak's own database; None when ready, else why it is skipped."""
    try:
        import hordak  # noqa: F401
    except ImportError:
        return "django-hordak is not installed (it belongs to the bench dependency group)"
    from bench.runtime import recreate_database

    recreate_database(hordak_database())
    try:
        _hordak("setup", {"accounts": accounts})
    except RuntimeError as exc:
        return f"django-hordak could not be set up: {str(exc)[-500:]}"
    return None


def run(plan: Plan) -> tuple[dict[str, Any], gates.GateReport]:
    deadlocks_before = gates.deadlock_count()
    ids = accounts_create(plan.ledger_accounts)
    hordak_skipped = hordak_setup(plan.ledger_accounts)
    runs: list[dict[str, Any]] = []
    client_deadlocks = 0
    other_errors: dict[str, int] = {}
    for run_index in range(plan.runs):
        measured: dict[str, Any] = {}
        for clients in plan.ledger_clients:
            for shape in SHAPES:
                tag = f"r{run_index}-{shape}-{clients}"
                key = f"{shape}@{clients}"
                for name, factory in (("entry_post", entry_post_factory),
                                      ("raw_sql", raw_sql_factory)):
                    result = run_clients(clients, plan.seconds, factory(ids, shape,
                                                                        f"{name}-{tag}"))
                    client_deadlocks += result.deadlocks
                    for error, count in result.errors.items():
                        other_errors[error] = other_errors.get(error, 0) + count
                    measured.setdefault(name, {})[key] = result.as_dict()
                if shape == "hot":
                    result = run_clients(clients, plan.seconds, raw_sql_batch_factory(
                        ids, shape, f"batch-{tag}"))
                    client_deadlocks += result.deadlocks
                    for error, count in result.errors.items():
                        other_errors[error] = other_errors.get(error, 0) + count
                    batch = result.as_dict()
                    batch["per_second"] = round(batch["per_second"] * BATCH_SIZE, 1)
                    measured.setdefault("raw_sql_batch", {})[key] = batch
        if hordak_skipped is None:
            try:
                measured["hordak"] = _hordak("run", {
                    "seconds": plan.seconds,
                    "configs": [{"clients": c, "shape": s, "tag": f"r{run_index}"}
                                for c in plan.ledger_clients for s in SHAPES]})
            except RuntimeError as exc:
                hordak_skipped = f"django-hordak failed while running: {str(exc)[-500:]}"
        runs.append(_ratios(measured, plan))
        print(f"  ledger run {run_index + 1}/{plan.runs}: " + ", ".join(
            f"{k} {v['per_second']:.0f}/s" for k, v in measured["entry_post"].items()), flush=True)
    report = gates.check("ledger", deadlocks_before=deadlocks_before,
                         client_deadlocks=client_deadlocks, extra=[
                             gates.Gate("every_transfer_committed", not other_errors,
                                        f"client errors: {other_errors}")])
    keys = [f"{s}@{c}" for c in plan.ledger_clients for s in SHAPES]
    result = {
        "accounts": plan.ledger_accounts, "clients": list(plan.ledger_clients),
        "hordak_skipped": hordak_skipped,
        "runs": runs,
        "median": {key: {
            "entry_post_per_second": median([r["entry_post"][key]["per_second"] for r in runs]),
            "raw_sql_per_second": median([r["raw_sql"][key]["per_second"] for r in runs]),
            "hordak_per_second": median([r["hordak"][key]["per_second"] for r in runs
                                         if "hordak" in r]),
            "vs_raw_sql": median([r["ratios"][key]["vs_raw_sql"] for r in runs]),
            "vs_hordak": median([r["ratios"][key].get("vs_hordak") for r in runs]),
            "entry_post_p99_ms": median([r["entry_post"][key]["p99_ms"] for r in runs]),
        } for key in keys},
        "batch_size": BATCH_SIZE,
        "batch_hot_per_second": {f"hot@{c}": median(
            [r["raw_sql_batch"][f"hot@{c}"]["per_second"] for r in runs])
            for c in plan.ledger_clients},
        "hot_32_vs_8": median([r["hot_32_vs_8"] for r in runs]),
        "raw_hot_32_vs_8": median([r["raw_hot_32_vs_8"] for r in runs]),
    }
    result["hot_collapses"] = (result["hot_32_vs_8"] is not None
                               and result["hot_32_vs_8"] < COLLAPSE_THRESHOLD)
    return result, report


def _ratios(measured: dict[str, Any], plan: Plan) -> dict[str, Any]:
    ratios = {}
    for key, entry in measured["entry_post"].items():
        ratios[key] = {"vs_raw_sql": ratio(entry["per_second"],
                                           measured["raw_sql"][key]["per_second"])}
        if "hordak" in measured:
            ratios[key]["vs_hordak"] = ratio(entry["per_second"],
                                             measured["hordak"][key]["per_second"])
    low, high = min(plan.ledger_clients), max(plan.ledger_clients)
    return {**measured, "ratios": ratios,
            "hot_32_vs_8": ratio(measured["entry_post"][f"hot@{high}"]["per_second"],
                                 measured["entry_post"][f"hot@{low}"]["per_second"]),
            "raw_hot_32_vs_8": ratio(measured["raw_sql"][f"hot@{high}"]["per_second"],
                                     measured["raw_sql"][f"hot@{low}"]["per_second"])}
