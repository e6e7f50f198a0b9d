"""Scenario 3: the ledger. `ledger.services.entry_post`, captures, batches, and their baselines.

Shapes: *spread* moves money between two random accounts of 1,000 (platform accounts: shards of
one `provider_clearing`, which may go negative, so no transfer is refused; an entry may not move
two merchants' balances); *hot* credits one account from a random other, as when every capture
of a big merchant lands on one balance;
*captures* are `ledger.flows.post_capture` for 100 merchants, every one of them debiting the
same provider's `provider_clearing` (split into shards by merchant) and crediting the
merchant's `pending`; *batch* is `entries_post` of BATCH_SIZE entries on the hot account in one
transaction. Each runs with 8 and 32 concurrent client processes.

Baselines, measured in the same run and interleaved with it:
- *floor*: what this machine does for the same rows with plain SQL (psycopg, no ORM, no
  Django): BEGIN + lock both accounts FOR NO KEY UPDATE in id order, reading balance, version
  and chain head + the clock and a sequence number (one round trip); the entry digest and both
  posting hashes computed in Python with `ledger.chain`; INSERT the entry + both postings +
  COMMIT (one round trip). Per-account locks only, as entry_post. The posting trigger checks
  every link and balance, and the gates run ledger_verify over these rows too. Also measured
  on the spread: the same floor with BEGIN and COMMIT in round trips of their own (4, as
  entry_post's transaction sends them), which splits entry_post's gap into round trips and the
  rest (Python, the ORM, the replay lookup).
- *chained floor*: the same plus one global `pg_advisory_xact_lock` taken after the account
  locks and held to COMMIT: the ceiling of the ledger's previous design (one hash chain for
  every entry), kept to show what that lock cost.
- *django-hordak 2.0*: `Account.transfer_to` inside `transaction.atomic()`, in its own database
  and process tree (bench/hordak_bench.py), so its tables never enter this project.
Captures are compared with entry_post's spread rate, batches with the floor on the hot account.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench import gates
from bench.clients import DEADLOCK, ClientsResult, Operation, OperationFactory, run_clients
from bench.runtime import ROOT, Plan, child_env, database_url
from bench.stats import median, ratio

SHAPES = ("spread", "hot")
ENTRY_KIND = "adjustment"
REFERENCE_TYPE = "bench"
COLLAPSE_THRESHOLD = 0.7  # hot with 32 clients below 70 % of hot with 8: "collapse"
BATCH_SIZE = 50
CAPTURE_MERCHANTS = 100
CAPTURE_PROVIDER = "sandbox"
CURRENCY = "usd"
# The key the ledger's old global chain lock used (ledger.services before migration 0003).
CHAINED_FLOOR_LOCK_KEY = 0x6C65_6467_6572_0001


def accounts_create(count: int) -> list[int]:
    """`count` platform accounts (shards of one `provider_clearing:bench`, any of which may go
    negative); returns the account ids. Platform accounts, because an entry may move one
    merchant's balances at most."""
    from ledger.models import AccountKind
    from ledger.services import account_for

    return [account_for(currency=CURRENCY, kind=AccountKind.PROVIDER_CLEARING,
                        provider="bench", shard=i).pk for i in range(count)]


def capture_merchants(ids: list[int], count: int) -> list[str]:
    """`count` merchants to capture for (`ids` is unused: the transfer accounts belong to the
    platform), with every clearing shard they will credit created now, so the measurement never
    times an account's creation."""
    from core.services import merchant_create
    from ledger.models import AccountKind
    from ledger.services import account_for, account_row, clearing_key

    merchants = [merchant_create(name=f"Bench capture merchant {i}")[0] for i in range(count)]
    for merchant in merchants:
        account_row(clearing_key(merchant=merchant, currency=CURRENCY, provider=CAPTURE_PROVIDER))
    # Shard 0 is the one unsplit row every capture uses when LEDGER_CLEARING_SHARDS is 1.
    account_for(currency=CURRENCY, kind=AccountKind.PROVIDER_CLEARING, provider=CAPTURE_PROVIDER)
    return sorted(merchant.pk for merchant in merchants)


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


def batch_factory(ids: list[int], shape: str, tag: str) -> OperationFactory:
    """`entries_post` of BATCH_SIZE transfers: one operation is one batch (the caller multiplies
    the rate by BATCH_SIZE), as a poster draining a hot account's queue of intents would."""

    def factory(index: int) -> Operation:
        from ledger.models import Account
        from ledger.services import EntrySpec, entries_post

        accounts = {a.pk: a for a in Account.objects.filter(pk__in=ids)}
        rng = random.Random(f"{tag}-{index}")

        def batch(sequence: int) -> None:
            specs = []
            for number in range(BATCH_SIZE):
                source, target = _pairs(rng, ids, shape)
                amount = rng.randint(1, 10_000)
                specs.append(EntrySpec(
                    kind=ENTRY_KIND, lines=[(accounts[source], -amount),
                                            (accounts[target], amount)],
                    reference_type=REFERENCE_TYPE,
                    reference_id=f"{tag}-{index}-{sequence}-{number}"))
            entries_post(specs)

        return batch

    return factory


def capture_factory(merchant_ids: list[str], tag: str, shards: int | None = None, *,
                    resolved: bool = False) -> OperationFactory:
    """`ledger.flows.post_capture` for a random one of the merchants, as the capture task calls
    it. `shards` overrides LEDGER_CLEARING_SHARDS in the client process (1: one unsplit
    clearing row for every merchant, as before the split). `resolved`: the same two lines
    through `entry_post`, with both accounts looked up once per client instead of by
    post_capture's two `account_for` queries per capture (what those lookups cost)."""

    def factory(index: int) -> Operation:
        from django.conf import settings

        from core.models import Merchant
        from ledger.flows import post_capture
        from ledger.models import AccountKind, EntryKind
        from ledger.services import account_for, account_row, clearing_key, entry_post

        if shards is not None:
            settings.LEDGER_CLEARING_SHARDS = shards
        merchants = list(Merchant.objects.filter(pk__in=merchant_ids).order_by("pk"))
        accounts = {m.pk: (account_row(clearing_key(merchant=m, currency=CURRENCY,
                                                    provider=CAPTURE_PROVIDER)),
                           account_for(merchant=m, currency=CURRENCY, kind=AccountKind.PENDING))
                    for m in merchants} if resolved else {}
        rng = random.Random(f"{tag}-{index}")

        def capture(sequence: int) -> None:
            merchant, amount = rng.choice(merchants), rng.randint(1, 10_000)
            payment_id = f"{tag}-{index}-{sequence}"
            if not resolved:
                post_capture(merchant=merchant, payment_id=payment_id,
                             provider=CAPTURE_PROVIDER, currency=CURRENCY, amount=amount)
                return
            clearing, pending = accounts[merchant.pk]
            entry_post(kind=EntryKind.CAPTURE, lines=[(clearing, -amount), (pending, amount)],
                       reference_type="payment", reference_id=payment_id, merchant=merchant,
                       description=f"Capture of {payment_id}")

        return capture

    return factory


# -- the floor: plain SQL -------------------------------------------------------------------
_LOCK_SQL = ("SELECT id, balance, currency, merchant_id, version, head_hash, kind, provider, "
             "shard FROM ledger_account WHERE id = ANY(%s::bigint[]) ORDER BY id "
             "FOR NO KEY UPDATE")
_GLOBAL_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"
_CLOCK_SQL = "SELECT clock_timestamp(), nextval('ledger_entry_sequence')"
_ENTRY_SQL = ("INSERT INTO ledger_journalentry (id, sequence, kind, description, reference_type, "
              "reference_id, merchant_id, created_at, hash) "
              "VALUES (%s, %s, %s, '', %s, %s, NULL, %s, %s)")
_POSTINGS_SQL = ("INSERT INTO ledger_posting (id, entry_id, account_id, merchant_id, amount, "
                 "currency, balance_after, created_at, account_version, prev_hash, hash) VALUES "
                 "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s), "
                 "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def connect() -> Any:
    """A psycopg connection of its own to Django's database (the bench's, or a test's), in
    autocommit mode so that BEGIN and COMMIT ride in the statements' round trips, binding
    client-side so one execute may carry several statements."""
    import psycopg
    from django.db import connection

    db = connection.settings_dict
    params = {"dbname": db["NAME"], "user": db["USER"], "password": db["PASSWORD"],
              "host": db["HOST"], "port": db["PORT"]}
    return psycopg.connect(**{k: str(v) for k, v in params.items() if v}, autocommit=True,
                           cursor_factory=psycopg.ClientCursor)


def _run(cur: Any, statements: Sequence[str], params: Sequence[object]) -> list[Any]:
    """Several statements in one round trip; each one's rows (None for a command)."""
    cur.execute("; ".join(statements), params)
    results = []
    while True:
        results.append(cur.fetchall() if cur.description is not None else None)
        if not cur.nextset():
            return results


def floor_factory(ids: list[int], shape: str, tag: str, *, chained: bool = False,
                  split: bool = False) -> OperationFactory:
    """The floor (see the module docstring); `chained` adds the old design's global lock;
    `split` sends BEGIN and COMMIT in round trips of their own, as entry_post's transaction
    does (psycopg's BEGIN, atomic()'s COMMIT): 4 round trips instead of 2, same statements."""

    def factory(index: int) -> Operation:
        from psycopg.pq import TransactionStatus

        from core.ids import new_id
        from ledger.chain import EntryLine, account_label, entry_digest, micros, posting_hash

        conn = connect()
        cur = conn.cursor()
        rng = random.Random(f"{tag}-{index}")
        first = [_LOCK_SQL, *([_GLOBAL_LOCK_SQL] if chained else []), _CLOCK_SQL]
        last = [_ENTRY_SQL, _POSTINGS_SQL]
        if not split:
            first, last = ["BEGIN", *first], [*last, "COMMIT"]
        lock_at = first.index(_LOCK_SQL)

        def transfer(sequence: int) -> None:
            source, target = _pairs(rng, ids, shape)
            amount = rng.randint(1, 10_000)
            amounts = {source: -amount, target: amount}
            reference_id = f"{tag}-{index}-{sequence}"
            try:
                if split:
                    cur.execute("BEGIN")
                results = _run(cur, first, [sorted(amounts),
                                            *([CHAINED_FLOOR_LOCK_KEY] if chained else [])])
                locked, ((created_at, entry_sequence),) = results[lock_at], results[-1]
                entry_id = new_id("txn")
                lines = [EntryLine(new_id("bt"), pk, amounts[pk], currency)
                         for pk, _balance, currency, *_rest in locked]
                digest = entry_digest(
                    entry_id=entry_id, kind=ENTRY_KIND, reference_type=REFERENCE_TYPE,
                    reference_id=reference_id, merchant_id=None, description="",
                    created_at=created_at, lines=lines)
                created_us = micros(created_at)
                values: list[object] = [entry_id, entry_sequence, ENTRY_KIND, REFERENCE_TYPE,
                                        reference_id, created_at, digest]
                for (pk, balance, currency, merchant_id, version, head, kind, provider,
                     shard), line in zip(locked, lines, strict=True):
                    balance_after = balance + line.amount
                    link = posting_hash(
                        prev_hash=head, account_id=pk, owner=merchant_id or "",
                        label=account_label(kind, provider, shard), account_version=version + 1,
                        posting_id=line.posting_id, entry_id=entry_id, entry_hash=digest,
                        amount=line.amount, currency=currency, balance_after=balance_after,
                        created_at_us=created_us)
                    values += [line.posting_id, entry_id, pk, merchant_id, line.amount, currency,
                               balance_after, created_at, version + 1, head, link]
                _run(cur, last, values)
                if split:
                    cur.execute("COMMIT")
            except Exception:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")  # the statements after a failed one never ran
                raise

        return transfer

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


def _measurements(ids: list[int], merchant_ids: list[str], tag: str, *, poster: bool
                  ) -> list[tuple[str, str, OperationFactory, int]]:
    """(implementation, shape, factory, transfers per operation) for one client count, in the
    order measured: each implementation next to the baseline it is compared with. `poster`
    adds the batch poster: ONE client posting batches, as a queue consumer would."""
    return [
        ("entry_post", "spread", entry_post_factory(ids, "spread", f"ep-s-{tag}"), 1),
        ("floor", "spread", floor_factory(ids, "spread", f"fl-s-{tag}"), 1),
        ("floor_split", "spread", floor_factory(ids, "spread", f"fs-s-{tag}", split=True), 1),
        ("chained_floor", "spread",
         floor_factory(ids, "spread", f"ch-s-{tag}", chained=True), 1),
        ("capture", "clearing", capture_factory(merchant_ids, f"cap-{tag}"), 1),
        ("capture_unsplit", "clearing", capture_factory(merchant_ids, f"cap1-{tag}", shards=1),
         1),
        ("capture_resolved", "clearing",
         capture_factory(merchant_ids, f"capr-{tag}", resolved=True), 1),
        ("entry_post", "hot", entry_post_factory(ids, "hot", f"ep-h-{tag}"), 1),
        ("floor", "hot", floor_factory(ids, "hot", f"fl-h-{tag}"), 1),
        ("chained_floor", "hot", floor_factory(ids, "hot", f"ch-h-{tag}", chained=True), 1),
        ("batch", "hot", batch_factory(ids, "hot", f"bt-h-{tag}"), BATCH_SIZE),
        *([("batch_poster", "hot", batch_factory(ids, "hot", f"bp-h-{tag}"), BATCH_SIZE)]
          if poster else []),
    ]


def run(plan: Plan) -> tuple[dict[str, Any], gates.GateReport]:
    deadlocks_before = gates.deadlock_count()
    ids = accounts_create(plan.ledger_accounts)
    merchant_ids = capture_merchants(ids, CAPTURE_MERCHANTS)
    hordak_skipped = hordak_setup(plan.ledger_accounts)
    runs: list[dict[str, Any]] = []
    errors: Counter[str] = Counter()
    for run_index in range(plan.runs):
        measured: dict[str, Any] = {}
        for clients in plan.ledger_clients:
            order = _measurements(ids, merchant_ids, f"r{run_index}-{clients}",
                                  poster=clients == min(plan.ledger_clients))
            if run_index % 2:  # drift during a run favours neither side of a pair
                order.reverse()
            for name, shape, factory, per_operation in order:
                count = 1 if name == "batch_poster" else clients
                result: ClientsResult = run_clients(count, plan.seconds, factory)
                errors.update(result.errors)
                row = result.as_dict()
                row["per_second"] = round(result.per_second * per_operation, 1)
                measured.setdefault(name, {})[f"{shape}@{count}"] = row
        if hordak_skipped is None:
            try:
                measured["hordak"] = _hordak("run", {
                    "seconds": plan.seconds,
                    "configs": [{"clients": c, "shape": s, "tag": f"r{run_index}"}
                                for c in plan.ledger_clients for s in SHAPES]})
            except RuntimeError as exc:
                hordak_skipped = f"django-hordak failed while running: {str(exc)[-500:]}"
        runs.append({**measured, "ratios": _ratios(measured, plan)})
        print(f"  ledger run {run_index + 1}/{plan.runs}: " + ", ".join(
            f"{name} {key} {row['per_second']:.0f}/s" for name in measured
            for key, row in measured[name].items()), flush=True)
    client_deadlocks = errors.pop(DEADLOCK, 0)
    report = gates.check("ledger", deadlocks_before=deadlocks_before,
                         client_deadlocks=client_deadlocks, extra=[
                             gates.Gate("every_transfer_committed", not errors,
                                        f"client errors: {dict(errors)}")])
    return summary(runs, plan, hordak_skipped), report


def _ratios(measured: dict[str, Any], plan: Plan) -> dict[str, Any]:
    def rate(name: str, key: str) -> float | None:
        return measured.get(name, {}).get(key, {}).get("per_second")

    ratios: dict[str, Any] = {}
    for clients in plan.ledger_clients:
        for shape in SHAPES:
            key = f"{shape}@{clients}"
            ratios[key] = {
                "vs_floor": ratio(rate("entry_post", key), rate("floor", key)),
                "vs_chained_floor": ratio(rate("entry_post", key), rate("chained_floor", key)),
                "vs_floor_split": ratio(rate("entry_post", key), rate("floor_split", key)),
                "floor_vs_chained_floor": ratio(rate("floor", key), rate("chained_floor", key)),
                "vs_hordak": ratio(rate("entry_post", key), rate("hordak", key)),
            }
        spread = rate("entry_post", f"spread@{clients}")
        ratios[f"capture@{clients}"] = {
            "vs_spread": ratio(rate("capture", f"clearing@{clients}"), spread),
            "unsplit_vs_spread": ratio(rate("capture_unsplit", f"clearing@{clients}"), spread),
            "resolved_vs_spread": ratio(rate("capture_resolved", f"clearing@{clients}"),
                                        spread)}
        ratios[f"batch@{clients}"] = {
            "vs_floor": ratio(rate("batch", f"hot@{clients}"), rate("floor", f"hot@{clients}")),
            "vs_entry_post": ratio(rate("batch", f"hot@{clients}"),
                                   rate("entry_post", f"hot@{clients}"))}
    low, high = min(plan.ledger_clients), max(plan.ledger_clients)
    ratios["batch_poster"] = ratio(rate("batch_poster", "hot@1"), rate("floor", f"hot@{low}"))
    for name in ("entry_post", "floor"):
        ratios[f"{name}_hot_{high}_vs_{low}"] = ratio(rate(name, f"hot@{high}"),
                                                     rate(name, f"hot@{low}"))
    return ratios


def summary(runs: list[dict[str, Any]], plan: Plan, hordak_skipped: str | None
            ) -> dict[str, Any]:
    """Medians over the runs: each rate, and each ratio taken within a run."""
    from django.conf import settings

    def rates(name: str, key: str, field: str = "per_second") -> float | None:
        return median([r[name][key][field] for r in runs if key in r.get(name, {})])

    def ratios(key: str, name: str | None = None) -> float | None:
        values = [r["ratios"][key] for r in runs]
        return median([v[name] for v in values] if name else values)

    low, high = min(plan.ledger_clients), max(plan.ledger_clients)
    pairs = {f"{s}@{c}": (s, c) for c in plan.ledger_clients for s in SHAPES}
    result: dict[str, Any] = {
        "accounts": plan.ledger_accounts, "clients": list(plan.ledger_clients),
        "capture_merchants": CAPTURE_MERCHANTS, "batch_size": BATCH_SIZE,
        "clearing_shards": settings.LEDGER_CLEARING_SHARDS,
        "hordak_skipped": hordak_skipped, "runs": runs,
        "median": {key: {
            "entry_post_per_second": rates("entry_post", key),
            "floor_per_second": rates("floor", key),
            "chained_floor_per_second": rates("chained_floor", key),
            "floor_split_per_second": rates("floor_split", key),
            "vs_floor_split": ratios(key, "vs_floor_split"),
            "hordak_per_second": rates("hordak", key),
            "vs_floor": ratios(key, "vs_floor"),
            "vs_chained_floor": ratios(key, "vs_chained_floor"),
            "floor_vs_chained_floor": ratios(key, "floor_vs_chained_floor"),
            "vs_hordak": ratios(key, "vs_hordak"),
            "entry_post_p99_ms": rates("entry_post", key, "p99_ms"),
        } for key in pairs},
        "captures": {str(c): {
            "per_second": rates("capture", f"clearing@{c}"),
            "unsplit_per_second": rates("capture_unsplit", f"clearing@{c}"),
            "spread_per_second": rates("entry_post", f"spread@{c}"),
            "vs_spread": ratios(f"capture@{c}", "vs_spread"),
            "unsplit_vs_spread": ratios(f"capture@{c}", "unsplit_vs_spread"),
            "resolved_per_second": rates("capture_resolved", f"clearing@{c}"),
            "resolved_vs_spread": ratios(f"capture@{c}", "resolved_vs_spread"),
        } for c in plan.ledger_clients},
        "batches": {str(c): {
            "per_second": rates("batch", f"hot@{c}"),
            "floor_per_second": rates("floor", f"hot@{c}"),
            "vs_floor": ratios(f"batch@{c}", "vs_floor"),
            "vs_entry_post": ratios(f"batch@{c}", "vs_entry_post"),
        } for c in plan.ledger_clients},
        "batch_poster": {"per_second": rates("batch_poster", "hot@1"),
                         "floor_clients": low, "floor_per_second": rates("floor", f"hot@{low}"),
                         "vs_floor": ratios("batch_poster")},
        "hot_high_vs_low": ratios(f"entry_post_hot_{high}_vs_{low}"),
        "floor_hot_high_vs_low": ratios(f"floor_hot_{high}_vs_{low}"),
    }
    result["hot_collapses"] = (result["hot_high_vs_low"] is not None
                               and result["hot_high_vs_low"] < COLLAPSE_THRESHOLD)
    return result
