"""`python -m bench` (`make bench`): every scenario, its baselines and its correctness gates.

Environment: BENCH_QUICK=1 for a smoke run (one short run each), BENCH_ONLY=api,ledger,… to
run some scenarios, BENCH_RUNS / BENCH_SECONDS to change repetitions and durations,
BENCH_NO_PROFILE=1 to skip the profiles. Exits 1, loudly, when any correctness gate fails.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import runtime
from bench.runtime import Plan

SCENARIOS = ("api", "ledger", "outbox", "settlement")
# Run only when named in BENCH_ONLY: each starts make run's whole stack several times (~15 min).
OPT_IN = ("burst",)


def _scenario(name: str, plan: Plan, work_dir: Path) -> Callable[[], tuple[dict, Any]]:
    from bench import api, burst, ledger, outbox, settlement

    return {
        "burst": lambda: burst.run(plan, work_dir),
        "api": lambda: api.run(plan, work_dir),
        "ledger": lambda: ledger.run(plan),
        "outbox": lambda: outbox.run(plan),
        "settlement": lambda: settlement.run(plan, work_dir),
    }[name]


def _print_gates(report: Any) -> None:
    for gate in report.gates:
        mark = "ok  " if gate.ok else "FAIL"
        detail = gate.detail.splitlines()[0] if gate.detail else ""
        print(f"    [{mark}] {gate.name}: {detail}", flush=True)


OPTIONAL = {"matplotlib": "docs/bench.png", "hordak": "the django-hordak baseline",
            "pyinstrument": "the profiles"}


def _missing_optional() -> list[str]:
    import importlib.util

    return [f"{module} ({what})" for module, what in OPTIONAL.items()
            if importlib.util.find_spec(module) is None]


def main() -> int:
    plan = Plan.from_env()
    began = time.monotonic()
    if missing := _missing_optional():
        print("bench: WARNING, the bench dependency group is not installed; skipping "
              + ", ".join(missing) + ". Install it with `uv sync --group bench`.",
              file=sys.stderr, flush=True)
    print(f"bench: {'QUICK smoke run' if plan.quick else 'full run'}, {plan.runs} run(s) per "
          f"scenario, database {runtime.database_url(runtime.bench_database_name())}",
          flush=True)
    migrate_seconds = runtime.migrate()
    runtime.django_setup()
    from bench import gates, profiles, report, settlement

    results: dict[str, Any] = {
        "mode": "quick" if plan.quick else "full", "runs": plan.runs,
        "plan": asdict(plan), "machine": runtime.machine(),
        "migrate_seconds": round(migrate_seconds, 1),
    }
    reports: list[gates.GateReport] = []
    # Logs (gunicorn, the Celery worker) stay here after the run; the rest is scratch.
    work_dir = runtime.ROOT / ".data" / "bench"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    try:
        for name in SCENARIOS + OPT_IN:
            if not plan.wants(name) or (name in OPT_IN and name not in plan.only):
                continue
            if name == "settlement" and (reason := settlement.available()):
                print(f"\n== {name}: SKIPPED ({reason})", flush=True)
                results["settlement_skipped"] = reason
                continue
            print(f"\n== {name}", flush=True)
            started = time.monotonic()
            try:
                result, gate_report = _scenario(name, plan, work_dir)()
            except Exception as exc:
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
                gate_report = gates.GateReport(name)
                gate_report.add("scenario_completed", False, result["error"])
            result["seconds"] = round(time.monotonic() - started, 1)
            results[name] = result
            results.setdefault("gates", []).append(gate_report.as_dict())
            reports.append(gate_report)
            _print_gates(gate_report)
        if plan.profile:
            print("\n== profiles (pyinstrument)", flush=True)
            wanted = {name for name in SCENARIOS if plan.wants(name)
                      and not (name == "settlement" and "settlement_skipped" in results)}
            stamp = datetime.now(UTC).strftime("%Y-%m-%d")
            try:
                results["profiles"] = profiles.run(stamp, work_dir, wanted)
            except Exception as exc:
                traceback.print_exc()
                results["profiles"] = {"error": f"{type(exc).__name__}: {exc}"}
            after = gates.check("profiles", deadlocks_before=gates.deadlock_count())
            results.setdefault("gates", []).append(after.as_dict())
            reports.append(after)
            _print_gates(after)
    finally:
        for scratch in work_dir.glob("broker-*"):
            shutil.rmtree(scratch, ignore_errors=True)
    finished = datetime.now(UTC)
    results["finished_at"] = finished.isoformat(timespec="seconds")
    results["total_seconds"] = round(time.monotonic() - began, 1)
    rows = report.rows(results)
    markdown = report.table(rows)
    print("\n" + markdown)
    suffix = "-only-" + "-".join(sorted(plan.only)) if plan.only else ""
    json_path = report.write_json(results, rows, finished, suffix)
    plot_path = report.plot(results) if not plan.only else None
    doc_updated = (report.write_doc_table(markdown, results)
                   if not plan.quick and not plan.only else False)
    print(f"\nresults: {json_path.relative_to(runtime.ROOT)}"
          + (f", plot: {plot_path.relative_to(runtime.ROOT)}" if plot_path else
             ", plot: skipped (matplotlib missing, or BENCH_ONLY set)")
          + (", docs/BENCHMARKS.md table updated" if doc_updated else "")
          + f"; {results['total_seconds']:.0f} s in all", flush=True)
    failed = [(r.scenario, g) for r in reports for g in r.gates if not g.ok]
    if failed:
        banner = "!" * 78
        print(f"\n{banner}\nBENCH FAILED: {len(failed)} correctness gate(s) failed",
              file=sys.stderr)
        for scenario, gate in failed:
            print(f"  {scenario}: {gate.name}: {gate.detail}", file=sys.stderr)
        print(banner, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
