"""`.ci/run` runs `make test` the way a newcomer does (no DATABASE_URL, no REDIS_URL: embedded
PostgreSQL) and against the machine's services, and fails when either fails or runs no test.
Checked with a stand-in `make` on PATH that records its environment: no nested suite."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "run"
PASSED = "== 831 passed, 9 skipped in 300s =="

# Says $NEWCOMER (or $SERVICES when DATABASE_URL is set): "<exit code> <summary line>".
FAKE_MAKE = """#!/usr/bin/env bash
echo "$* | DATABASE_URL=${DATABASE_URL-<unset>} | REDIS_URL=${REDIS_URL-<unset>}\
 | CELERY_TEST_BROKER=${CELERY_TEST_BROKER-<unset>}" >> "$CALLS"
if [ -z "${DATABASE_URL:-}" ]; then says=$NEWCOMER; else says=$SERVICES; fi
echo "${says#* }"
exit "${says%% *}"
"""


def _run_ci(tmp_path: Path, *, newcomer: str, services: str, broker: str = "amqp"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(FAKE_MAKE)
    (bin_dir / "make").chmod(0o755)
    calls = tmp_path / "calls"
    # The suite itself may run with CELERY_TEST_BROKER set (CI's services run): the script
    # must decide it for each run, never inherit it.
    env = {**os.environ, "CELERY_TEST_BROKER": "amqp",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "CALLS": str(calls), "NEWCOMER": newcomer, "SERVICES": services, "PYTEST_ARGS": "",
           # What CI's services answer as; the script must drop both for the newcomer run.
           "DATABASE_URL": "postgres://postgres@ci-db:5432/test",
           "REDIS_URL": "redis://ci-redis:6379/0",
           # Where RabbitMQ answers .ci/run picks amqp itself; set here so the test does not
           # depend on this machine's services.
           "CI_TEST_BROKER": broker}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=120)
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_ci_script_names_both_paths():
    text = SCRIPT.read_text()
    assert "env -u DATABASE_URL -u REDIS_URL -u CELERY_TEST_BROKER make test" in text
    assert "postgres://postgres@127.0.0.1:5432/test" in text
    assert "redis://127.0.0.1:6379/0" in text


def test_ci_script_runs_make_test_as_a_newcomer_and_with_the_services(tmp_path):
    result, calls = _run_ci(tmp_path, newcomer=f"0 {PASSED}", services=f"0 {PASSED}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == [
        "test PYTEST_ARGS= | DATABASE_URL=<unset> | REDIS_URL=<unset>"
        " | CELERY_TEST_BROKER=<unset>",
        "test PYTEST_ARGS= | DATABASE_URL=postgres://postgres@ci-db:5432/test"
        " | REDIS_URL=redis://ci-redis:6379/0 | CELERY_TEST_BROKER=amqp",
    ]


def test_ci_script_keeps_the_in_memory_broker_when_told(tmp_path):
    result, calls = _run_ci(tmp_path, newcomer=f"0 {PASSED}", services=f"0 {PASSED}",
                            broker="memory")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [call.rsplit(" | ", 1)[1] for call in calls] == ["CELERY_TEST_BROKER=<unset>"] * 2


@pytest.mark.parametrize("newcomer, services, says", [
    ("5 no tests ran in 0.01s", f"0 {PASSED}", "no test ran"),
    (f"0 {PASSED}", "0 collected 0 items", "no test ran"),
    ("1 == 1 failed, 830 passed in 300s ==", f"0 {PASSED}", "make test failed (exit 1)"),
    (f"0 {PASSED}", "2 == 1 error, 830 passed in 300s ==", "make test failed (exit 2)"),
])
def test_ci_script_fails_when_either_run_fails_or_runs_no_test(tmp_path, newcomer, services,
                                                                says):
    result, calls = _run_ci(tmp_path, newcomer=newcomer, services=services)
    assert result.returncode != 0
    assert says in result.stderr
    assert len(calls) == 2, "both runs happen, so one CI report shows both paths"
