"""A burst against make run's real stack (tools/run.py on free ports of 127.0.0.1, the embedded
Valkey broker, on the test database), issue 21: the benchmark's code path with a tiny burst
while another merchant's three endpoints refuse connections, and every Celery worker SIGKILLed
in the middle of a burst with the stack restarted: every payment ends captured, refunds are
exact, the ledger verifies, no card is charged twice, and the janitor ran during the recovery.
No times are asserted; the measured figures are in docs/BENCHMARKS.md (bench/burst.py)."""

from __future__ import annotations

import pytest
from django.db import connection

from bench import burst

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER'] or 'postgres'}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def test_a_small_burst_with_another_merchants_dead_endpoints_ends_final_and_exact(tmp_path):
    measured = burst.measure(database_url=_database_url(), work_dir=tmp_path, name="smoke",
                             payments=12, clients=4, dead=3, timeout=300)
    try:
        problems = burst.verdict(measured.result, simulator_url=measured.stack.simulator)
    finally:
        code = measured.stack.stop()
    assert measured.seconds_to_final is not None, (
        measured.result.errors, burst.not_final(measured.result), measured.stack.tail(1500))
    assert problems == [], problems
    assert code == 0, measured.stack.tail()
    assert len(measured.result.payments) == 12 and len(measured.result.refunds) == 3
    # The dead endpoints were tried, and their circuits hold the rest back.
    assert measured.details["dead_after"]["attempts"] >= 3


def test_workers_sigkilled_mid_burst_and_the_stack_restarted_every_payment_ends_exact(tmp_path):
    measured = burst.measure(
        database_url=_database_url(), work_dir=tmp_path, name="crash", payments=48, clients=6,
        kill_workers_after=20, timeout=420,
        # The janitor every 2 s, and an attempt never answered is looked up after 5 s.
        extra_env={"RECON_JANITOR_INTERVAL_SECONDS": "2", "RECON_JANITOR_GRACE_SECONDS": "5"})
    try:
        problems = burst.verdict(measured.result, simulator_url=measured.stack.simulator,
                                 janitor_since=measured.details["restarted_at"])
    finally:
        code = measured.stack.stop()
    assert measured.details["killed_workers"] == 3, measured.details
    assert measured.seconds_to_final is not None, (
        measured.result.errors, burst.not_final(measured.result), measured.stack.tail(1500))
    assert problems == [], problems
    assert code == 0, measured.stack.tail()
    assert len(measured.result.payments) == 48 and len(measured.result.refunds) == 12
