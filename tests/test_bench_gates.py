"""`make bench` fails loudly when money breaks: the correctness gates see a tampered ledger
and a duplicate charge, and `python -m bench` then exits 1 with a banner naming the gate."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.db import connection

from bench import __main__ as bench_main
from bench import gates, report, runtime
from ledger.models import Posting

pytestmark = pytest.mark.django_db


def test_the_gates_pass_on_a_clean_ledger(make_payment):
    make_payment(amount=2500)
    result = gates.check("clean", deadlocks_before=gates.deadlock_count())
    assert result.ok, [(g.name, g.detail) for g in result.gates if not g.ok]
    assert {g.name for g in result.gates} >= {
        "debits_equal_credits", "ledger_verify", "zero_deadlocks", "zero_duplicate_payments",
        "zero_duplicate_charges"}


def test_a_tampered_posting_fails_the_ledger_gates(make_payment):
    make_payment(amount=2500)
    posting = Posting.objects.filter(amount__gt=0).first()
    with connection.cursor() as cursor:
        # What only a superuser bypassing every trigger could do: the gates must still see it.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE ledger_posting SET amount = amount + 1 WHERE id = %s",
                       [posting.pk])
        cursor.execute("SET LOCAL session_replication_role = origin")
    try:
        result = gates.check("tampered", deadlocks_before=gates.deadlock_count())
    finally:  # put it back, or the deferred zero-sum trigger refuses the test's teardown
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("UPDATE ledger_posting SET amount = amount - 1 WHERE id = %s",
                           [posting.pk])
            cursor.execute("SET LOCAL session_replication_role = origin")
    failed = {g.name for g in result.gates if not g.ok}
    assert failed == {"debits_equal_credits", "ledger_verify"}


def test_a_second_charge_at_the_provider_fails_the_duplicate_charge_gate(make_payment):
    payment = make_payment(amount=2500)
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO providers_sandboxcharge (reference, merchant_reference, amount, currency,
                status, captured, refunded, created_at)
            SELECT reference || '_again', merchant_reference, amount, currency, status,
                   captured, refunded, created_at
              FROM providers_sandboxcharge WHERE merchant_reference = %s""", [payment.id])
        assert cursor.rowcount == 1
    result = gates.check("duplicate", deadlocks_before=gates.deadlock_count())
    assert {g.name for g in result.gates if not g.ok} == {"zero_duplicate_charges"}


def _session_database_url() -> str:
    """The server this test session runs on (DATABASE_URL's or the embedded one)."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return (f"postgres://{quote(db['USER'])}{password}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}")


def test_bench_exits_1_with_a_banner_when_a_gate_fails(monkeypatch, tmp_path, capsys):
    broken = gates.GateReport("ledger")
    broken.add("ledger_verify", False, "entry txn_x: postings sum to 1, not 0")
    monkeypatch.setenv("BENCH_ONLY", "ledger")
    monkeypatch.setenv("BENCH_QUICK", "1")
    monkeypatch.setattr(runtime, "ROOT", tmp_path)
    # The newcomer's path whether or not DATABASE_URL is set: the bench finds its server
    # through the URL file `make db-start` writes, here naming this session's server.
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "database_url").write_text(_session_database_url() + "\n")
    monkeypatch.setattr(runtime, "migrate", lambda: 0.0)
    monkeypatch.setattr(runtime, "django_setup", lambda: None)
    monkeypatch.setattr(runtime, "machine", lambda: {"cpus": 2})
    monkeypatch.setattr(bench_main, "_scenario", lambda name, plan, work_dir: lambda: (
        {"per_second": 1.0}, broken))
    monkeypatch.setattr(report, "write_json", lambda *args, **kwargs: tmp_path / "r.json")
    assert bench_main.main() == 1
    out, err = capsys.readouterr()
    assert f"database {runtime.database_url(runtime.DEFAULT_DATABASE)}" in out
    assert "BENCH FAILED: 1 correctness gate(s) failed" in err
    assert "ledger: ledger_verify: entry txn_x" in err

    healthy = gates.GateReport("ledger")
    healthy.add("ledger_verify", True, "clean")
    monkeypatch.setattr(bench_main, "_scenario", lambda name, plan, work_dir: lambda: (
        {"per_second": 1.0}, healthy))
    assert bench_main.main() == 0
