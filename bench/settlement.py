"""Scenario 5: import and match a provider settlement file of 10,000 and 100,000 lines.

The file is in Cielo's format (`;`-separated, integer cents) and lists captures we hold, plus a
few lines that must open breaks (0.5 % with a wrong amount, 0.5 % with a reference we never
saw). It goes through `reconciliation.settlements.settlement_import` — parse, match in batches,
store lines and breaks in one transaction — given as an open file (the service streams it), in
a fresh subprocess, which reports the time and its memory: peak RSS growth during the import
(the VmHWM high-water mark, reset just before, minus the RSS before) and, with
BENCH_TRACEMALLOC=1, tracemalloc's peak of Python allocations in a second process. "Flat in
file size" means the 100k file's peak is close to the 10k file's, not ten times it.

Fixture: the captured payments the lines refer to are COPYed in as the lifecycle leaves them
(with triggers off for that one transaction when the bench role is a superuser, else COPYed as
`created` and moved to `captured` by two set-based UPDATEs that the status trigger checks).
Creating 110,000 payments per run through the provider and ledger services would take most of
the 15-minute budget; import and match only read payments and write reconciliation rows, so
nothing downstream sees the difference. No settling is measured
(settling posts one ledger entry per payment and belongs to the ledger scenario's numbers).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from datetime import date
from pathlib import Path
from typing import Any

from bench import gates
from bench.runtime import ROOT, Plan, child_env
from bench.stats import median

PROVIDER = "cielo"
HEADER = ("DataVenda;PaymentId;MerchantOrderId;Tipo;Moeda;ValorBruto;Taxa;ValorLiquido;"
          "IdentificadorTransacao")
IMPORT_TIMEOUT_SECONDS = 300  # 100k lines take ~10-30 s here; a hang must fail, not stall
BREAK_EVERY = 200  # one line in 200 is a wrong amount, one in 200 an unknown reference


def _payments_copy(rows: list[dict[str, Any]]) -> None:
    """COPY payments in; each row gives plain column values (str, int) for some fields and the
    rest take the field's default, prepared once. bulk_create spent half a minute per 100,000
    rows here. Every column comes from the model, so a field added later gets its default
    without touching this code."""
    from django.db import connection
    from django.utils import timezone

    from payments.models import Payment

    fields = Payment._meta.concrete_fields
    now = timezone.now()
    defaults = {}
    for field in fields:
        auto = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        defaults[field.attname] = field.get_db_prep_save(
            now if auto else field.get_default(), connection)
    names = [field.attname for field in fields]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    connection.ensure_connection()
    with connection.cursor() as cursor, cursor.cursor.copy(
            f"COPY {Payment._meta.db_table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[name] if name in row else defaults[name] for name in names])


def _is_superuser() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        row = cursor.fetchone()
    return bool(row and row[0])


def fixture_create(*, lines: int, tag: str, path: Path, file_day: date) -> dict[str, int]:
    """Captured payments for a file of `lines` lines, and the file; returns expected counts."""
    from django.db import connection, transaction
    from django.db.models import F

    from core.services import merchant_create
    from payments.models import Payment, PaymentStatus

    merchant, _ = merchant_create(name=f"Bench settlement merchant {tag}")
    rng = random.Random(tag)
    amounts = [rng.randint(100, 500_000) for _ in range(lines)]
    rows = [{"id": f"pay_bench{tag}x{i}", "merchant_id": merchant.pk, "amount": amount,
             "currency": "brl", "payment_method": "pm_card_visa", "provider": PROVIDER,
             "provider_reference": f"cielo-{tag}-{i}"} for i, amount in enumerate(amounts)]
    with transaction.atomic():
        if _is_superuser():
            # The rows the lifecycle leaves (captured, authorized = captured = amount), COPYed
            # in one go: the per-row status and refund triggers cost two minutes per run for
            # 110,000 rows, and this is a fixture in the throw-away bench database. Triggers
            # are off for this transaction only (SET LOCAL); nothing of the ledger is touched.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
            _payments_copy([{**row, "status": PaymentStatus.CAPTURED,
                             "amount_authorized": row["amount"],
                             "amount_captured": row["amount"]} for row in rows])
        else:
            _payments_copy(rows)
            payments = Payment.objects.filter(merchant=merchant)
            # Set-based moves along the state table; the status trigger checks each row.
            payments.update(status=PaymentStatus.AUTHORIZATION_REQUESTED)
            payments.update(status=PaymentStatus.CAPTURED, amount_authorized=F("amount"),
                            amount_captured=F("amount"))
    mismatched = unknown = 0
    with path.open("w") as out:
        out.write(HEADER + "\n")
        day = file_day.strftime("%d/%m/%Y")
        for i, amount in enumerate(amounts):
            reference, gross = f"cielo-{tag}-{i}", amount
            if i % BREAK_EVERY == 1:
                gross, mismatched = amount + 1, mismatched + 1
            elif i % BREAK_EVERY == 2:
                reference, unknown = f"cielo-{tag}-unknown-{i}", unknown + 1
            fee = gross * 2 // 100
            out.write(f"{day};{reference};pay_bench{tag}x{i};Venda;BRL;{gross};{fee};"
                      f"{gross - fee};\n")
    return {"lines": lines, "matched": lines - mismatched - unknown,
            "breaks": mismatched + unknown, "bytes": path.stat().st_size}


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Start the high-water mark (VmHWM) from the current RSS. Not getrusage's maxrss: Linux
    keeps that across exec, so a child of a large parent would report the parent's peak."""
    with contextlib.suppress(OSError):  # kernels before 4.0: the peak then counts start-up too
        Path("/proc/self/clear_refs").write_text("5")


def _child_import(payload: dict[str, Any]) -> dict[str, Any]:
    """In the subprocess: import one file, measuring time and memory."""
    from bench.runtime import django_setup

    django_setup()
    from reconciliation.settlements import settlement_import

    if payload["tracemalloc"]:
        tracemalloc.start()
    _reset_peak()
    rss_before = _status_kb("VmRSS")
    started = time.perf_counter()
    # A seekable file, not bytes: the service streams it (checksum, storage, parsing), which
    # is what keeps memory flat; bytes would put the whole file in memory first.
    with Path(payload["path"]).open("rb") as handle:
        result = settlement_import(provider=PROVIDER,
                                   file_date=date.fromisoformat(payload["day"]), content=handle)
    elapsed = time.perf_counter() - started
    answer = {"lines": result.lines, "matched": result.matched, "breaks": result.breaks,
              "by_status": result.by_status, "seconds": round(elapsed, 3),
              "rss_before_mib": round(rss_before / 1024, 1),
              "peak_rss_growth_mib": round((_status_kb("VmHWM") - rss_before) / 1024, 1)}
    if payload["tracemalloc"]:
        _current, peak = tracemalloc.get_traced_memory()
        answer["tracemalloc_peak_mib"] = round(peak / 1024 / 1024, 1)
    return answer


def _import(path: Path, day: date, *, traced: bool) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.settlement"], cwd=ROOT, env=child_env(),
        input=json.dumps({"path": str(path), "day": day.isoformat(), "tracemalloc": traced}),
        capture_output=True, text=True, check=False, timeout=IMPORT_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise RuntimeError(f"settlement import failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout)


def available() -> str | None:
    """None when the reconciliation app exposes the import service, else why we skip."""
    try:
        from reconciliation.settlements import settlement_import  # noqa: F401
    except ImportError as exc:
        return f"reconciliation.settlements.settlement_import is not available: {exc}"
    return None


def run(plan: Plan, work_dir: Path) -> tuple[dict[str, Any], gates.GateReport]:
    deadlocks_before = gates.deadlock_count()
    runs: list[dict[str, Any]] = []
    problems: list[str] = []
    day = date(2025, 1, 1)
    for index in range(plan.runs):
        measured: dict[str, Any] = {}
        for size in plan.settlement_lines:
            tag = f"s{index}n{size}"
            path = work_dir / f"settlement-{tag}.csv"
            expected = fixture_create(lines=size, tag=tag, path=path, file_day=day)
            got = _import(path, day, traced=False)
            if (got["lines"], got["matched"], got["breaks"]) != (
                    expected["lines"], expected["matched"], expected["breaks"]):
                problems.append(f"{tag}: expected {expected}, got {got}")
            got["lines_per_second"] = round(got["lines"] / got["seconds"], 1)
            got["file_mib"] = round(expected["bytes"] / 1024 / 1024, 2)
            measured[str(size)] = got
            path.unlink(missing_ok=True)
        runs.append(measured)
        print(f"  settlement run {index + 1}/{plan.runs}: " + ", ".join(
            f"{k} lines {v['lines_per_second']:.0f}/s peak +{v['peak_rss_growth_mib']} MiB"
            for k, v in measured.items()), flush=True)
    # tracemalloc slows Python down (and costs minutes at 100k lines), so its peak comes from
    # one extra import per size, only when asked for (BENCH_TRACEMALLOC=1).
    traced: dict[str, Any] = {}
    for size in plan.settlement_lines if plan.tracemalloc else ():
        tag = f"t{size}"
        path = work_dir / f"settlement-{tag}.csv"
        fixture_create(lines=size, tag=tag, path=path, file_day=day)
        traced[str(size)] = _import(path, day, traced=True)["tracemalloc_peak_mib"]
        path.unlink(missing_ok=True)
    small, large = (str(s) for s in (min(plan.settlement_lines), max(plan.settlement_lines)))
    report = gates.check("settlement", deadlocks_before=deadlocks_before, extra=[
        gates.Gate("every_line_matched_or_broken_as_expected", not problems,
                   "; ".join(problems) or "matched and break counts as planted")])
    growth = {size: median([r[size]["peak_rss_growth_mib"] for r in runs])
              for size in (small, large)}
    result = {
        "provider": PROVIDER, "sizes": list(plan.settlement_lines), "runs": runs,
        "tracemalloc_peak_mib": traced,
        "median": {
            "lines_per_second": median([r[large]["lines_per_second"] for r in runs]),
            "lines_per_second_small": median([r[small]["lines_per_second"] for r in runs]),
            "peak_rss_growth_mib": growth,
            "memory_ratio_large_vs_small": (growth[large] / growth[small]
                                            if growth[small] else None),
            "tracemalloc_ratio_large_vs_small": (traced[large] / traced[small]
                                                 if traced.get(small) else None),
        },
    }
    return result, report


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    json.dump(_child_import(json.load(sys.stdin)), sys.stdout)
