"""Scenarios 1 and 2: create+confirm with an Idempotency-Key, and its replay, against gunicorn.

gunicorn runs the production settings (DEBUG off, BENCH_ENDPOINTS=1 for the constant baseline,
rate limiting off) on 127.0.0.1 and an ephemeral port; `bench.loadgen` drives it from another
process over loopback. Each run sweeps the concurrency for the three kinds, interleaved level by
level so that drift on this shared machine touches them alike, then measures latency open-loop
at 70 % of each kind's own saturation. The confirm enqueues a Celery task: the broker is Redis
when REDIS_URL is set, else kombu's filesystem transport in a temporary directory, and a real
worker drains the queue afterwards so that the gates see captured payments and their entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import gates
from bench.runtime import ROOT, SERVER_SETTINGS_MODULE, Plan, child_env
from bench.stats import median, ratio

# Tuned on the 2-core machine (docs/BENCHMARKS.md, "gunicorn tuning"): 2 workers × 8 threads
# served the most create+confirm requests per second; more processes only add context switches.
WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", "2"))
THREADS = int(os.environ.get("BENCH_GUNICORN_THREADS", "8"))
LOAD_FRACTION = 0.7
DRAIN_TIMEOUT_SECONDS = 240.0
DRAIN_PROCESSES = 2  # one per core, like a Celery worker's default prefork pool here


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(*, port: int, broker_dir: Path) -> dict[str, str]:
    """Production settings plus what they require (as tests/test_deployment.py does)."""
    from cryptography.fernet import Fernet

    redis_url = os.environ.get("REDIS_URL", "")
    return child_env(
        DJANGO_SETTINGS_MODULE=SERVER_SETTINGS_MODULE,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SECURE_SSL_REDIRECT="false",
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        METRICS_TOKEN=secrets.token_urlsafe(24),
        BENCH_ENDPOINTS="1",
        # Production enables and classifies every provider explicitly; the bench's merchants
        # are test merchants, served by the sandbox.
        PROVIDERS_ENABLED="sandbox",
        PROVIDERS_TEST="sandbox",
        RATE_LIMIT_ENABLED="false",
        CELERY_BROKER_URL=redis_url or "filesystem://",
        CELERY_BROKER_DIR=str(broker_dir),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS=str(WORKERS),
        GUNICORN_THREADS=str(THREADS),
        LOG_LEVEL="INFO",  # production logs one access line per request; so do we
    )


class Gunicorn:
    """gunicorn with the project's config/gunicorn.py, output to a log file (a pipe nobody
    reads would fill up and stall the workers)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Gunicorn:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):  # noqa: S310
                    return self
            except OSError:
                time.sleep(0.2)  # still binding; bounded by the deadline
        raise RuntimeError(f"gunicorn did not answer /healthz; see {self.log_path}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _plan(plan: Plan, base_url: str, api_key: str) -> dict[str, Any]:
    phases: list[dict[str, Any]] = [
        # Warm-up: workers open their database connections and fill their caches.
        {"name": "warmup-constant", "kind": "constant", "mode": "closed", "concurrency": 8,
         "duration": 1.0, "record": False},
        {"name": "warmup-create", "kind": "create", "mode": "closed", "concurrency": 8,
         "duration": 1.0, "record": False},
    ]
    for level in plan.api_concurrency:
        for kind in ("constant", "create", "replay"):
            phases.append({"name": f"{kind}@{level}", "kind": kind, "mode": "closed",
                           "concurrency": level, "duration": plan.seconds})
    for kind in ("constant", "create", "replay"):
        phases.append({"name": f"{kind}@70%", "kind": kind, "mode": "open", "of": kind,
                       "fraction": LOAD_FRACTION, "duration": plan.latency_seconds})
    return {"base_url": base_url, "api_key": api_key, "phases": phases}


def _loadgen(plan: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"], cwd=ROOT, env=child_env(),
        input=json.dumps(plan).encode(), capture_output=True, check=False,
        timeout=sum(phase["duration"] for phase in plan["phases"]) * 3 + 120)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed: {result.stderr.decode()[-3000:]}")
    return json.loads(result.stdout)


def _summarise(run: dict[str, Any]) -> dict[str, Any]:
    phases = {p["name"]: p for p in run["phases"]}
    saturation = run["saturation_rps"]
    open_loop = {kind: phases[f"{kind}@70%"] for kind in ("constant", "create", "replay")}
    return {
        "saturation_rps": saturation,
        "create_ratio": ratio(saturation.get("create"), saturation.get("constant")),
        "replay_ratio": ratio(saturation.get("replay"), saturation.get("constant")),
        "at_70": {kind: {"rate": p["rate_target"], "achieved_rps": p["rps"],
                         "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"], "errors": p["errors"]}
                  for kind, p in open_loop.items()},
        "errors": sum(p["errors"] for p in run["phases"]),
        "statuses": [p["statuses"] for p in run["phases"] if p["errors"]],
        "created": run["created"],
        "loadgen_cpu_share": ratio(sum(p["loadgen_cpu_seconds"] for p in run["phases"]),
                                   sum(p["seconds"] for p in run["phases"])),
        "phases": run["phases"],
    }


def _drain_with_celery(env: dict[str, str], log_path: Path, waiting: Any, total: int
                       ) -> tuple[int, float]:
    """A real Celery worker on the real broker, until nothing is left or the timeout."""
    started = time.monotonic()
    with log_path.open("ab") as log:
        worker = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker",
             "-c", str(DRAIN_PROCESSES), "-l", "WARNING", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-n", f"bench-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    left = total
    try:
        while left and time.monotonic() - started < DRAIN_TIMEOUT_SECONDS:
            time.sleep(1.0)  # polling a count; the worker's progress is what we wait for
            left = waiting.count()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return left, time.monotonic() - started


def _authorize_share(attempt_ids: list[str], pipe: Any) -> None:
    from payments.tasks import payment_authorize

    failures = 0
    for attempt_id in attempt_ids:
        try:
            payment_authorize(attempt_id)  # the task body, run here as a worker child would
        except Exception:
            failures += 1
    pipe.send(failures)
    pipe.close()


def _drain_with_task_calls(waiting: Any) -> tuple[int, float]:
    """Without Redis, kombu's filesystem transport hands a worker about one message per
    polling interval (1 s), which measures the poll, not the work. So worker processes call the
    task function itself on every waiting attempt: the same code a Celery child runs."""
    import multiprocessing

    from django.db import connections

    ids = list(waiting.values_list("pk", flat=True))
    connections.close_all()
    context = multiprocessing.get_context("fork")
    started = time.monotonic()
    children = []
    for share in range(DRAIN_PROCESSES):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_authorize_share,
                                  args=(ids[share::DRAIN_PROCESSES], sender), daemon=True)
        process.start()
        sender.close()
        children.append((process, receiver))
    for process, receiver in children:
        # A child that died leaves attempts waiting; the count below shows them.
        with contextlib.suppress(EOFError):
            receiver.recv()
        process.join(timeout=DRAIN_TIMEOUT_SECONDS)
    return waiting.count(), time.monotonic() - started


def _drain(env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Give every confirmed payment its provider answer, so the gates see captures and their
    ledger entries: a Celery worker over Redis when REDIS_URL is set, else task calls."""
    from payments.models import AttemptStatus, PaymentAttempt

    waiting = PaymentAttempt.objects.filter(status=AttemptStatus.REQUESTED)
    total = waiting.count()
    if os.environ.get("REDIS_URL"):
        how = f"celery worker -c {DRAIN_PROCESSES} (redis)"
        left, elapsed = _drain_with_celery(env, log_path, waiting, total)
    else:
        how = f"{DRAIN_PROCESSES} processes calling payments.tasks.payment_authorize"
        left, elapsed = _drain_with_task_calls(waiting)
    return {"how": how, "attempts": total, "left": left, "seconds": round(elapsed, 1),
            "per_second": round((total - left) / elapsed, 1) if elapsed else None}


def run(plan: Plan, work_dir: Path) -> tuple[dict[str, Any], gates.GateReport]:
    from core.services import merchant_create
    from payments.models import Payment, PaymentStatus

    merchant, issued = merchant_create(name="Bench API merchant")
    deadlocks_before = gates.deadlock_count()
    broker_dir = Path(tempfile.mkdtemp(prefix="broker-", dir=work_dir))
    env = server_env(port=_free_port(), broker_dir=broker_dir)
    runs = []
    with Gunicorn(env, work_dir / "gunicorn.log") as server:
        for index in range(plan.runs):
            summary = _summarise(_loadgen(_plan(plan, server.url, issued.raw_key)))
            print(f"  api run {index + 1}/{plan.runs}: saturation "
                  + ", ".join(f"{k} {v:.0f}/s" for k, v in summary["saturation_rps"].items())
                  + f"; create p99 @70% {summary['at_70']['create']['p99_ms']:.1f} ms",
                  flush=True)
            runs.append(summary)
    created = sum(r["created"] for r in runs)
    payments = Payment.objects.filter(merchant=merchant)
    in_db = payments.count()
    drain = _drain(env, work_dir / "celery-worker.log") if not plan.quick else None
    captured = payments.filter(status=PaymentStatus.CAPTURED).count()
    errors = sum(r["errors"] for r in runs)
    extra = [
        gates.Gate("every_request_answered_as_expected", errors == 0,
                   f"{errors} unexpected answers: {[r['statuses'] for r in runs if r['errors']]}"),
        # Every 202 made one payment and replays made none: with no transport error the two
        # counts are equal; a request that timed out may have committed, so it may add one.
        gates.Gate("one_payment_per_key", in_db == created if errors == 0 else in_db >= created,
                   f"{created} answered 202, {in_db} payments in the database"),
    ]
    if drain is not None:
        extra.append(gates.Gate(
            "worker_drained_every_confirm", drain["left"] == 0 and captured == in_db,
            f"{drain['attempts']} authorizations in {drain['seconds']} s, {drain['left']} left; "
            f"{captured}/{in_db} payments captured"))
    report = gates.check("api", deadlocks_before=deadlocks_before, extra=extra)
    result = {
        "gunicorn": {"workers": WORKERS, "threads": THREADS, "worker_class": "gthread",
                     "settings": SERVER_SETTINGS_MODULE,
                     "broker": "redis" if os.environ.get("REDIS_URL") else "filesystem"},
        "levels": list(plan.api_concurrency),
        "runs": runs,
        "median": {
            "constant_rps": median([r["saturation_rps"].get("constant") for r in runs]),
            "create_rps": median([r["saturation_rps"].get("create") for r in runs]),
            "replay_rps": median([r["saturation_rps"].get("replay") for r in runs]),
            "create_ratio": median([r["create_ratio"] for r in runs]),
            "replay_ratio": median([r["replay_ratio"] for r in runs]),
            "create_p50_ms_at_70": median([r["at_70"]["create"]["p50_ms"] for r in runs]),
            "create_p99_ms_at_70": median([r["at_70"]["create"]["p99_ms"] for r in runs]),
            "constant_p99_ms_at_70": median([r["at_70"]["constant"]["p99_ms"] for r in runs]),
            "replay_p99_ms_at_70": median([r["at_70"]["replay"]["p99_ms"] for r in runs]),
            "loadgen_cpu_share": median([r["loadgen_cpu_share"] for r in runs]),
        },
        "drain": drain,
    }
    return result, report
