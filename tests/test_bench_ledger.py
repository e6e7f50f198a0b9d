"""The ledger scenario's own code paths (bench/ledger.py): every implementation it times posts
entries the triggers accept and `ledger_verify` finds clean, and its results become table rows.
No timing is asserted; `make bench` measures."""

from __future__ import annotations

import pytest
from django.db import connection

from bench import gates, ledger, report
from bench.runtime import Plan
from ledger.models import JournalEntry

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_timed_ledger_operation_posts_entries_the_gates_accept(settings):
    settings.LEDGER_CLEARING_SHARDS = 16  # the unsplit variant sets 1 inside this override
    deadlocks_before = gates.deadlock_count()
    ids = ledger.accounts_create(6)
    merchants = ledger.capture_merchants(ids, 3)
    factories = [
        (ledger.entry_post_factory(ids, "spread", "t-ep"), 1),
        (ledger.floor_factory(ids, "spread", "t-fl"), 1),
        (ledger.floor_factory(ids, "hot", "t-fs", split=True), 1),
        (ledger.floor_factory(ids, "hot", "t-ch", chained=True), 1),
        (ledger.capture_factory(merchants, "t-cap"), 1),
        (ledger.capture_factory(merchants, "t-cap1", shards=1), 1),
        (ledger.capture_factory(merchants, "t-capr", resolved=True), 1),
        (ledger.batch_factory(ids, "hot", "t-bt"), ledger.BATCH_SIZE),
    ]
    for factory, _per_operation in factories:
        operation = factory(0)
        for sequence in range(1, 4):
            operation(sequence)
    assert JournalEntry.objects.count() == sum(3 * per for _factory, per in factories)
    assert JournalEntry.objects.filter(kind="capture").count() == 9
    result = gates.check("smoke", deadlocks_before=deadlocks_before)
    assert result.ok, [(g.name, g.detail) for g in result.gates if not g.ok]


def test_a_floor_transfer_that_fails_midway_leaves_no_transaction_open():
    ids = ledger.accounts_create(2)
    # An account id that does not exist: the lock finds one row, the INSERT cannot be built.
    operation = ledger.floor_factory([*ids, 10**12], "spread", "t-missing")(0)
    with pytest.raises(Exception):  # noqa: B017 whichever error; what matters is the rollback
        for sequence in range(1, 50):
            operation(sequence)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                       "current_database() AND state LIKE 'idle in transaction%%'")
        assert cursor.fetchone()[0] == 0  # no account lock left held
    assert gates.check("after", deadlocks_before=gates.deadlock_count()).ok


def _run(rate: float) -> dict:
    keys = ("spread@8", "hot@8", "spread@32", "hot@32")
    row = {"per_second": rate, "p99_ms": 1.0}
    return {name: {key: row for key in keys} for name in (
        "entry_post", "floor", "floor_split", "chained_floor", "batch", "hordak")} | {
        "batch_poster": {"hot@1": row}} | {
        name: {"clearing@8": row, "clearing@32": row} for name in ("capture",
                                                                    "capture_unsplit",
                                                                    "capture_resolved")}


def test_ledger_results_become_table_rows_with_the_issue_targets():
    plan = Plan.from_env()
    runs = []
    for rate in (100.0, 120.0):
        measured = _run(rate)
        measured["floor"] = {k: {**v, "per_second": rate * 2} for k, v in measured["floor"].items()}
        runs.append({**measured, "ratios": ledger._ratios(measured, plan)})
    rows = report.rows({"ledger": ledger.summary(runs, plan, None)})
    targets = {(row.metric, row.target, row.reached) for row in rows if row.target}
    assert ("entry_post, 1,000 accounts, 8 clients", "≥ 0.50×", True) in targets
    assert ("entry_post, 1,000 accounts, 32 clients vs hordak", "≥ 2×", False) in targets
    assert any(row.metric.startswith("post_capture, 100 merchants") and row.target == "≥ 0.60×"
               and row.reached for row in rows)
    assert any(row.metric.startswith("entries_post, batches of 50") and row.target == "≥ 3×"
               and row.reached is False for row in rows)
