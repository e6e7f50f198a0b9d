"""Where and how long the benchmarks run: the bench database, Django set-up, the machine.

The bench database (`clearhouse_bench`, or BENCH_DATABASE_NAME) lives on the server that
DATABASE_URL names, else the embedded one `make db-start` wrote to `.data/database_url`. It is
dropped, created and migrated at the start of every run, so the development data is never
touched and every run starts from the same empty schema.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_DIR = ROOT / "docs"
SETTINGS_MODULE = os.environ.get("BENCH_SETTINGS_MODULE", "bench.settings")
# What gunicorn and the Celery worker of scenario 1 run: production, as deployed.
SERVER_SETTINGS_MODULE = os.environ.get("BENCH_SERVER_SETTINGS_MODULE",
                                        "config.settings.production")
DEFAULT_DATABASE = "clearhouse_bench"
HORDAK_DATABASE_SUFFIX = "_hordak"
# Read before django_setup() overwrites DATABASE_URL with the bench database's URL.
DATABASE_SOURCE = ("DATABASE_URL" if os.environ.get("DATABASE_URL", "").strip()
                   else "embedded PostgreSQL (make db-start)")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Plan:
    """Sizes and durations. BENCH_QUICK=1 is a smoke run (one short run of each scenario)."""

    quick: bool
    runs: int
    seconds: float  # one closed-loop measurement (a concurrency level, a client count)
    latency_seconds: float  # one open-loop measurement at 70 % of saturation
    api_concurrency: tuple[int, ...]
    ledger_clients: tuple[int, ...]
    ledger_accounts: int
    outbox_deliveries: int
    outbox_workers: int
    settlement_lines: tuple[int, ...]
    profile: bool
    tracemalloc: bool
    only: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls) -> Plan:
        quick = _flag("BENCH_QUICK")
        only = frozenset(s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",")
                         if s.strip())
        runs = int(os.environ.get("BENCH_RUNS", "1" if quick else "3"))
        return cls(
            quick=quick,
            runs=max(1, runs),
            seconds=float(os.environ.get("BENCH_SECONDS", "1.0" if quick else "3.0")),
            latency_seconds=float(os.environ.get("BENCH_LATENCY_SECONDS",
                                                 "1.5" if quick else "4.0")),
            api_concurrency=(4, 16) if quick else (1, 8, 32),
            ledger_clients=(8, 32),
            ledger_accounts=1000,
            outbox_deliveries=int(os.environ.get("BENCH_OUTBOX_DELIVERIES",
                                                 "1000" if quick else "10000")),
            outbox_workers=4,
            settlement_lines=(2_000, 10_000) if quick else (10_000, 100_000),
            profile=not quick and not _flag("BENCH_NO_PROFILE"),
            tracemalloc=_flag("BENCH_TRACEMALLOC"),
            only=only,
        )

    def wants(self, scenario: str) -> bool:
        return not self.only or scenario in self.only


def server_url() -> str:
    """The PostgreSQL server to use: DATABASE_URL, else the embedded server's URL file."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        url_file = ROOT / ".data" / "database_url"
        if not url_file.exists():
            sys.exit("bench: no DATABASE_URL and no .data/database_url; run `make db-start`")
        url = url_file.read_text().strip()
    return url


def database_url(name: str) -> str:
    parts = urlsplit(server_url())
    return urlunsplit(parts._replace(path=f"/{name}"))


def bench_database_name() -> str:
    return os.environ.get("BENCH_DATABASE_NAME", DEFAULT_DATABASE)


def recreate_database(name: str) -> None:
    """Drop and create `name`; refuses any name that is not clearly a benchmark database."""
    import psycopg

    if "bench" not in name:
        sys.exit(f"bench: refusing to drop {name!r}: the bench database name must contain "
                 "'bench'")
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def child_env(**extra: str) -> dict[str, str]:
    """The environment for every subprocess: the bench database and settings, nothing else."""
    env = {**os.environ, "DATABASE_URL": database_url(bench_database_name()),
           "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")])),
           "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING")}
    env.update(extra)
    return env


def migrate() -> float:
    """Create and migrate the bench database; returns the seconds it took."""
    started = time.monotonic()
    recreate_database(bench_database_name())
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
                   cwd=ROOT, env=child_env(), check=True)
    return time.monotonic() - started


def django_setup() -> None:
    """Configure this process for the bench database (call once, before importing models)."""
    os.environ["DATABASE_URL"] = database_url(bench_database_name())
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def machine() -> dict[str, object]:
    """What the numbers were measured on (the JSON and BENCHMARKS.md quote it)."""
    import psycopg

    with psycopg.connect(database_url(bench_database_name())) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        pg_settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections')").fetchall())
    memory_kb, cpu_model = 0, ""
    with contextlib.suppress(OSError):  # not Linux: leave them out
        memory_kb = next((int(line.split()[1])
                          for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal:")), 0)
        cpu_model = next((line.split(":", 1)[1].strip()
                          for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name")), "")
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "postgresql": version,
        "postgresql_settings": pg_settings,
        "database": DATABASE_SOURCE,
        "load_average_at_start": list(os.getloadavg()),
    }
