"""Correctness gates, checked after every scenario: a fast result that broke money is a failure.

- Σ debits = Σ credits over every posting, and zero per currency;
- `ledger_verify()` clean (zero-sum entries, balances = Σ postings, balance_after, hash chain);
- zero deadlocks: PostgreSQL's own counter for the bench database, plus what clients saw;
- zero duplicate payments (one per merchant + Idempotency-Key) and zero duplicate charges (one
  sandbox charge and at most one capture entry per payment);
- whatever the scenario adds (every HTTP answer as expected, every webhook delivered once, …).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.db import connection


@dataclass
class Gate:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class GateReport:
    scenario: str
    gates: list[Gate] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(gate.ok for gate in self.gates)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.gates.append(Gate(name, bool(ok), detail))

    def as_dict(self) -> dict[str, object]:
        return {"scenario": self.scenario, "ok": self.ok,
                "gates": [{"name": g.name, "ok": g.ok, "detail": g.detail} for g in self.gates]}


def _one(sql: str, params: list | None = None) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchone()


def deadlock_count() -> int:
    """PostgreSQL's deadlock counter for this database (flushed by backends as they go idle)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0] or 0)


def check(scenario: str, *, deadlocks_before: int, client_deadlocks: int = 0,
          extra: list[Gate] | None = None) -> GateReport:
    from ledger.verify import ledger_verify

    report = GateReport(scenario)
    debits, credits = _one("SELECT COALESCE(-sum(amount) FILTER (WHERE amount < 0), 0), "
                           "COALESCE(sum(amount) FILTER (WHERE amount > 0), 0) "
                           "FROM ledger_posting")
    unbalanced = _one("SELECT count(*) FROM (SELECT currency FROM ledger_posting "
                      "GROUP BY currency HAVING sum(amount) <> 0) AS bad")[0]
    report.add("debits_equal_credits", debits == credits and unbalanced == 0,
               f"Σ debits {debits}, Σ credits {credits}, unbalanced currencies {unbalanced}")
    verified = ledger_verify()
    report.add("ledger_verify", verified.ok, verified.report())
    time.sleep(0.5)  # backends that just went idle flush their statistics within ~1 s
    server_deadlocks = deadlock_count() - deadlocks_before
    report.add("zero_deadlocks", server_deadlocks == 0 and client_deadlocks == 0,
               f"pg_stat_database: {server_deadlocks}, seen by clients: {client_deadlocks}")
    duplicate_payments = _one(
        "SELECT count(*) FROM (SELECT 1 FROM payments_payment WHERE idempotency_key <> '' "
        "GROUP BY merchant_id, idempotency_key HAVING count(*) > 1) AS dup")[0]
    report.add("zero_duplicate_payments", duplicate_payments == 0,
               f"{duplicate_payments} (merchant, Idempotency-Key) pairs with > 1 payment")
    duplicate_charges = _one(
        "SELECT count(*) FROM (SELECT 1 FROM providers_sandboxcharge "
        "GROUP BY merchant_reference HAVING count(*) > 1) AS dup")[0]
    duplicate_captures = _one(
        "SELECT count(*) FROM (SELECT 1 FROM ledger_journalentry WHERE kind = 'capture' "
        "GROUP BY reference_id HAVING count(*) > 1) AS dup")[0]
    report.add("zero_duplicate_charges", duplicate_charges == 0 and duplicate_captures == 0,
               f"{duplicate_charges} payments charged twice at the sandbox, "
               f"{duplicate_captures} captured twice in the ledger")
    for gate in extra or []:
        report.gates.append(gate)
    return report
