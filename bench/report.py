"""Turn results into the printed table, bench/results/<date>.json, docs/bench.png, and the
table block of docs/BENCHMARKS.md (between its `bench:table` markers)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.runtime import DOCS_DIR, RESULTS_DIR

# 100k lines may use at most this many times the peak of 10k lines and still count as "flat"
# (ten times the lines: anything proportional to the file would be ~10×).
FLAT_MEMORY_FACTOR = 2.0


@dataclass
class Row:
    scenario: str
    metric: str
    value: float | None
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    target: str = ""
    reached: bool | None = None


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    api = results.get("api")
    if api and "median" in api:
        m = api["median"]
        out += [
            Row("1 API", "create+confirm at saturation", m["create_rps"], "req/s",
                "constant endpoint", m["constant_rps"], m["create_ratio"], "≥ 0.40×",
                _at_least(m["create_ratio"], 0.40)),
            Row("1 API", "create+confirm p50 at 70 % load", m["create_p50_ms_at_70"], "ms"),
            Row("1 API", "create+confirm p99 at 70 % load", m["create_p99_ms_at_70"], "ms",
                "constant p99 at 70 %", m["constant_p99_ms_at_70"], None, "≤ 50 ms",
                None if m["create_p99_ms_at_70"] is None else m["create_p99_ms_at_70"] <= 50),
            Row("2 replay", "idempotent replay at saturation", m["replay_rps"], "req/s",
                "constant endpoint", m["constant_rps"], m["replay_ratio"], "≥ 0.70×",
                _at_least(m["replay_ratio"], 0.70)),
        ]
    out += _ledger_rows(results.get("ledger"))
    outbox = results.get("outbox")
    if outbox and "median" in outbox:
        m = outbox["median"]
        out.append(Row("4 outbox", f"{outbox['deliveries']} deliveries, {outbox['workers']} "
                       "worker processes", m["outbox_per_second"], "deliveries/s",
                       f"raw POSTs, 1 process × {outbox['raw_threads']} threads",
                       m["raw_per_second"], m["ratio"], "≥ 0.50×", _at_least(m["ratio"], 0.5)))
    settlement = results.get("settlement")
    if settlement and "median" in settlement:
        m = settlement["median"]
        large, small = max(settlement["sizes"]), min(settlement["sizes"])
        out.append(Row("5 settlement", f"import + match, {large:,} lines", m["lines_per_second"],
                       "lines/s", f"{small:,} lines", m["lines_per_second_small"], None,
                       "≥ 20,000/s", _at_least(m["lines_per_second"], 20_000)))
        growth = m["peak_rss_growth_mib"]
        ratio_ = m["memory_ratio_large_vs_small"]
        out.append(Row("5 settlement", f"peak RSS growth, {large:,} lines",
                       growth[str(large)], "MiB", f"{small:,} lines", growth[str(small)], ratio_,
                       f"flat (≤ {FLAT_MEMORY_FACTOR:g}×)",
                       None if ratio_ is None else ratio_ <= FLAT_MEMORY_FACTOR))
    burst = results.get("burst")
    if burst and "median" in burst:
        m = burst["median"]
        out.append(Row("6 burst", f"{burst['payments']} create+confirm, {burst['clients']} "
                       "clients, another merchant's 3 dead endpoints: all final",
                       m["dead_endpoints_seconds"], "s", "same burst, plain",
                       m["plain_seconds"], m["ratio"], "≤ 1.50×",
                       None if m["ratio"] is None else m["ratio"] <= 1.5))
        if (recovery := burst.get("recovery")) and recovery.get("seconds_to_final"):
            out.append(Row("6 burst", "workers SIGKILLed mid-burst, stack restarted: all final",
                           recovery["seconds_to_final"], "s", "same burst, plain",
                           m["plain_seconds"], None))
    return out


def _ledger_rows(ledger: dict[str, Any] | None) -> list[Row]:
    if not ledger or "median" not in ledger:
        return []
    out: list[Row] = []
    where = {"spread": "1,000 accounts", "hot": "hot account"}
    for shape in ("spread", "hot"):
        for clients in ledger["clients"]:
            m = ledger["median"][f"{shape}@{clients}"]
            label = f"entry_post, {where[shape]}, {clients} clients"
            spread = shape == "spread"
            out.append(Row("3 ledger", label, m["entry_post_per_second"], "transfers/s",
                           "floor (plain SQL, per-account locks)", m["floor_per_second"],
                           m["vs_floor"], "≥ 0.50×" if spread else "",
                           _at_least(m["vs_floor"], 0.5) if spread else None))
            if m.get("floor_split_per_second") is not None:
                out.append(Row("3 ledger", f"{label} vs floor in 4 round trips",
                               m["entry_post_per_second"], "transfers/s",
                               "floor, BEGIN and COMMIT on their own (as entry_post)",
                               m["floor_split_per_second"], m["vs_floor_split"]))
            out.append(Row("3 ledger", f"{label} vs chained floor", m["entry_post_per_second"],
                           "transfers/s", "chained floor (+ global lock: the old design)",
                           m["chained_floor_per_second"], m["vs_chained_floor"]))
            if m["hordak_per_second"] is not None:
                out.append(Row("3 ledger", f"{label} vs hordak", m["entry_post_per_second"],
                               "transfers/s", "django-hordak", m["hordak_per_second"],
                               m["vs_hordak"], "≥ 2×" if spread else "",
                               _at_least(m["vs_hordak"], 2.0) if spread else None))
    shards = ledger.get("clearing_shards")
    for clients, m in ledger.get("captures", {}).items():
        out += [
            Row("3 ledger", f"post_capture, {ledger['capture_merchants']} merchants, one "
                f"provider's clearing ({shards} shards), {clients} clients", m["per_second"],
                "captures/s", "entry_post, 1,000 accounts", m["spread_per_second"],
                m["vs_spread"], "≥ 0.60×", _at_least(m["vs_spread"], 0.6)),
            Row("3 ledger", f"post_capture, same, clearing unsplit (1 shard), {clients} clients",
                m["unsplit_per_second"], "captures/s", "entry_post, 1,000 accounts",
                m["spread_per_second"], m["unsplit_vs_spread"]),
        ]
        if m.get("resolved_per_second") is not None:
            out.append(Row("3 ledger", f"same 2 lines via entry_post, accounts looked up once, "
                           f"{clients} clients", m["resolved_per_second"], "captures/s",
                           "entry_post, 1,000 accounts", m["spread_per_second"],
                           m["resolved_vs_spread"]))
    for clients, m in ledger.get("batches", {}).items():
        out.append(Row("3 ledger", f"entries_post, batches of {ledger['batch_size']}, hot "
                       f"account, {clients} clients", m["per_second"], "transfers/s",
                       "floor, 1 per transaction, hot account", m["floor_per_second"],
                       m["vs_floor"], "≥ 3×", _at_least(m["vs_floor"], 3.0)))
    if (poster := ledger.get("batch_poster")) and poster["per_second"] is not None:
        out.append(Row("3 ledger", f"entries_post, batches of {ledger['batch_size']}, hot "
                       "account, 1 poster (a queue consumer)", poster["per_second"],
                       "transfers/s", f"floor, 1 per transaction, hot account, "
                       f"{poster['floor_clients']} clients", poster["floor_per_second"],
                       poster["vs_floor"]))
    low, high = min(ledger["clients"]), max(ledger["clients"])
    out.append(Row("3 ledger", f"entry_post, hot account: {high} clients / {low} clients",
                   ledger["hot_high_vs_low"], "×", "floor, same ratio",
                   ledger["floor_hot_high_vs_low"], None, "≥ 0.70×",
                   _at_least(ledger["hot_high_vs_low"], 0.70)))
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(all_rows: list[Row]) -> str:
    """A Markdown table: printed as is, and pasted into docs/BENCHMARKS.md."""
    header = ("scenario", "metric", "median", "unit", "baseline", "baseline median", "ratio",
              "target", "reached")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in all_rows:
        cells = (row.scenario, row.metric, _fmt(row.value), row.unit, row.baseline,
                 _fmt(row.baseline_value), _fmt(row.ratio, 2), row.target,
                 {True: "yes", False: "**no**", None: ""}[row.reached])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(results: dict[str, Any], all_rows: list[Row], stamp: datetime,
               suffix: str = "") -> Path:
    """bench/results/<date>.json; a partial run (BENCH_ONLY) writes <date>-only-<names>.json,
    which `python -m bench.report merge` can fold into the full run's file."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp:%Y-%m-%d}{suffix}.json"
    document = {**results, "table": [asdict(row) for row in all_rows],
                "finished_at": stamp.isoformat(timespec="seconds")}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def write_doc_table(markdown: str, results: dict[str, Any]) -> bool:
    """Replace the block between the markers in docs/BENCHMARKS.md; False if it has none."""
    doc = DOCS_DIR / "BENCHMARKS.md"
    if not doc.exists():
        return False
    text = doc.read_text()
    pattern = re.compile(r"(<!-- bench:table -->\n).*?(<!-- /bench:table -->)", re.DOTALL)
    if not pattern.search(text):
        return False
    machine = results.get("machine", {})
    stamp = (f"Latest `make bench` ({results.get('mode')}, {results.get('finished_at', '')}), "
             f"{machine.get('nproc')} vCPU, {machine.get('memory_gib')} GiB, PostgreSQL "
             f"{machine.get('postgresql')} ({machine.get('database')}; fsync="
             f"{machine.get('postgresql_settings', {}).get('fsync')}); medians of "
             f"{results.get('runs')} runs; ratios to baselines measured in the same run.\n\n")
    doc.write_text(pattern.sub(lambda m: m.group(1) + stamp + markdown + "\n" + m.group(2),
                               text))
    return True


def plot(results: dict[str, Any]) -> Path | None:
    """docs/bench.png: throughput and p99 against concurrency for the API and the ledger."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from bench.stats import median

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    api = results.get("api")
    if api and "median" in api:
        for kind, style in (("constant", "o-"), ("create", "s-"), ("replay", "^-")):
            levels, rps, p99 = [], [], []
            for level in api["levels"]:
                phases = [p for r in api["runs"] for p in r["phases"]
                          if p["name"] == f"{kind}@{level}"]
                levels.append(level)
                rps.append(median([p["rps"] for p in phases]))
                p99.append(median([p["p99_ms"] for p in phases]))
            label = {"constant": "constant baseline", "create": "create+confirm",
                     "replay": "idempotent replay"}[kind]
            axes[0][0].plot(levels, rps, style, label=label)
            axes[0][1].plot(levels, p99, style, label=label)
        axes[0][0].set(title="API throughput (gunicorn, loopback)", xlabel="concurrent requests",
                       ylabel="req/s", xscale="log", ylim=(0, None))
        axes[0][1].set(title="API p99 latency", xlabel="concurrent requests", ylabel="ms",
                       xscale="log", ylim=(0, None))
    ledger = results.get("ledger")
    if ledger and "median" in ledger:
        series = [(impl, shape) for impl in ("entry_post", "floor", "chained_floor", "hordak")
                  for shape in ("spread", "hot")]
        series += [("capture", "clearing"), ("batch", "hot")]
        for number, (impl, shape) in enumerate(series):
            keys = [f"{shape}@{c}" for c in ledger["clients"]]
            runs = [r for r in ledger["runs"] if impl in r and all(k in r[impl] for k in keys)]
            if not runs:
                continue
            rate = [median([r[impl][k]["per_second"] for r in runs]) for k in keys]
            p99 = [median([r[impl][k]["p99_ms"] for r in runs]) for k in keys]
            label = {"spread": f"{impl} (1,000 accounts)", "hot": f"{impl} (hot account)",
                     "clearing": f"post_capture ({ledger.get('capture_merchants')} merchants, "
                                 "one clearing)"}[shape]
            if impl == "batch":  # one operation is a batch: p99 is per batch
                label = f"entries_post, batches of {ledger.get('batch_size')} (hot; p99 per batch)"
            style = "s--" if shape == "hot" else "o-"
            colour = f"C{number // 2}" if number < 8 else f"C{number - 4}"
            axes[1][0].plot(ledger["clients"], rate, style, color=colour, label=label)
            axes[1][1].plot(ledger["clients"], p99, style, color=colour, label=label)
        axes[1][0].set(title="Ledger 2-leg transfers", xlabel="client processes",
                       ylabel="transfers/s", ylim=(0, None))
        axes[1][1].set(title="Ledger transfer p99", xlabel="client processes", ylabel="ms",
                       ylim=(0, None))
    for row in axes:
        for ax in row:
            if ax.has_data():
                ax.legend(fontsize=7)
                ax.grid(alpha=0.3)
    fig.suptitle(f"make bench — {results.get('finished_at', '')} — medians of "
                 f"{results.get('runs')} runs, {results.get('machine', {}).get('nproc')} vCPU")
    fig.tight_layout()
    path = DOCS_DIR / "bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SCENARIO_KEYS = ("api", "ledger", "outbox", "settlement")


def merge(full_path: Path, partial_path: Path) -> str:
    """Replace the scenarios a partial run measured (e.g. one re-run after a fix) in a full
    run's JSON, then redraw the plot and the table. Both runs' gates are kept."""
    full = json.loads(full_path.read_text())
    partial = json.loads(partial_path.read_text())
    redone = [key for key in SCENARIO_KEYS if key in partial]
    for key in redone:
        full[key] = {**partial[key], "merged_from": partial_path.name,
                     "measured_at": partial.get("finished_at")}
    full["gates"] = [g for g in full.get("gates", []) if g["scenario"] not in redone] + [
        g for g in partial.get("gates", []) if g["scenario"] in redone]
    all_rows = rows(full)
    full["table"] = [asdict(row) for row in all_rows]
    full_path.write_text(json.dumps(full, indent=2, default=str) + "\n")
    markdown = table(all_rows)
    plot(full)
    write_doc_table(markdown, full)
    return markdown


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "merge":
        sys.exit("usage: python -m bench.report merge FULL.json PARTIAL.json")
    print(merge(Path(sys.argv[2]), Path(sys.argv[3])))
