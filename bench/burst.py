"""Scenario 6, a burst against `make run`'s own stack (issue 21), and its crash-recovery variant.

tools/run.py starts everything as a newcomer's `make run` does (runserver, one Celery worker
per queue, beat, the provider simulator, the embedded Valkey broker; no broker configured) on
free ports of 127.0.0.1, on the database this process uses. Then 240 create+confirm payments
(half USD through the sandbox, half BRL through the simulated acquirers; 1 in 4 refunded in
part once captured) from 12 client threads. Time to all final runs from the first request until
every payment and refund is final. Measured (a) plain and (b) while ANOTHER merchant has three
webhook endpoints that refuse connections, owed deliveries whose retries are all due.

Recovery (`kill_workers_after`): every Celery worker is SIGKILLed once that many payments were
created, tools/run.py stops the rest, and the stack is started again on the same database,
broker folder and simulator books while the clients keep retrying with their Idempotency-Keys.
`verdict()` then checks the money: every payment final, refunds exact, `ledger_verify` clean,
one charge per payment at the provider and one capture entry in the ledger, the janitor ran.
Used by `BENCH_ONLY=burst python -m bench` and by tests/test_burst_recovery.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
FINAL_PAYMENT = ("captured", "refunded", "settled", "failed", "canceled")
# What pm_card_visa may end as: anything else (failed, canceled) is a wrong outcome here.
CHARGED = ("captured", "refunded", "settled")
RETRYABLE = (409, 429, 500, 502, 503, 504)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, key: str, body: dict | None = None, *, idempotency_key: str = "",
         timeout: float = 15) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    request = urllib.request.Request(  # noqa: S310 - our own stack on 127.0.0.1
        url, data=json.dumps(body).encode() if body is not None else None, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def call_until_answered(url: str, key: str, body: dict | None = None, *, idempotency_key: str = "",
                        deadline: float) -> tuple[int, dict]:
    """A careful client: a refused connection, a lost answer, 409 (same key in flight), 429
    and 5xx are retried with the same Idempotency-Key until `deadline` (monotonic)."""
    pause = 0.1
    while True:
        try:
            status, answer = call(url, key, body, idempotency_key=idempotency_key)
            # A 2xx with no body is an answer cut off after its headers (the server stopped).
            if status not in RETRYABLE and (answer or status >= 300):
                return status, answer
        except (OSError, http.client.HTTPException, ValueError):
            pass  # the stack is restarting, or the answer was lost or cut short
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {url} before the deadline")
        time.sleep(pause)  # backing off between retries of one request, bounded
        pause = min(pause * 2, 2.0)


# -- the stack -------------------------------------------------------------------------------
def stack_env(*, state_dir: Path, database_url: str, port: int, **extra: str) -> dict[str, str]:
    """make run as a newcomer runs it (no broker configured: the embedded Valkey), every
    folder it keeps state in under `state_dir`, on `database_url`, on free ports."""
    env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(port), "HOST": "127.0.0.1",
           "SIMULATOR_PORT": str(free_port()),
           "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "EMBEDDED_BROKER_DIR": str(state_dir / "valkey"),
           "CELERY_BROKER_DIR": str(state_dir / "broker"),
           "SIMULATOR_STATE_FILE": str(state_dir / "simulator" / "books.pickle"),
           # The burst measures the pipeline, not the per-key budget (Redis-backed anyway).
           "RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING",
           # Checkpoints of a database that will be dropped stay out of .data/ (a stale one
           # would fail the next ledger_verify of a database with the same name).
           "LEDGER_CHECKPOINT_DIR": os.environ.get("LEDGER_CHECKPOINT_DIR")
           or str(state_dir.parent / "ledger-checkpoints"), **extra}
    for name in ("CELERY_BROKER_URL", "REDIS_URL"):
        env.pop(name, None)
    return env


class Stack:
    """tools/run.py in its own session, its output kept in memory and in `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.base = f"http://127.0.0.1:{env['PORT']}"
        self.simulator = f"http://127.0.0.1:{env['SIMULATOR_PORT']}"
        self.log_path = log_path
        self.output: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "tools/run.py"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with self.log_path.open("a") as log:
            for line in iter(self.proc.stdout.readline, ""):
                self.output.append(line)
                log.write(line)
                log.flush()

    def tail(self, chars: int = 3000) -> str:
        return "".join(self.output)[-chars:]

    def ready(self, timeout: float = 180) -> str:
        """Wait for the printed demo API key, the web server and a worker; return the key."""
        deadline = time.monotonic() + timeout
        key = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tools/run.py exited:\n" + self.tail())
            key = key or next((m.group(1) for line in list(self.output)
                               if (m := re.search(r"API key\s+(sk_test_\S+)", line))), None)
            if key and self._answers():
                return key
            time.sleep(0.25)  # polling processes we started, bounded by the deadline
        raise RuntimeError("the stack did not come up:\n" + self.tail())

    def _answers(self) -> bool:
        try:
            with _OPENER.open(f"{self.base}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _descendants(self) -> list[int]:
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += [int(child) for child in children]
            todo += [int(child) for child in children]
        return found

    def worker_pids(self) -> list[int]:
        """The main process of each Celery worker run.py started (each leads its own session,
        so its process group is its prefork pool too)."""
        pids = []
        for pid in self._descendants():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"celery" in argv and b"worker" in argv and os.getpgid(pid) == pid:
                pids.append(pid)
        return pids

    def kill_workers(self) -> list[int]:
        """SIGKILL every worker with its pool: no warm shutdown, no task handed back."""
        pids = self.worker_pids()
        for pid in pids:
            os.killpg(pid, signal.SIGKILL)
        return pids

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self.reader.join(timeout=5)
        return code

    def stop(self) -> int:
        """Ctrl-C, as a developer stops make run."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.wait_exit()


# -- the burst -------------------------------------------------------------------------------
@dataclass
class BurstResult:
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → the create body
    refunds: dict[str, int] = field(default_factory=dict)  # payment id → amount refunded
    errors: list[str] = field(default_factory=list)
    started: float = 0.0  # monotonic, at the first request
    clients_done: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(index: int, *, base: Callable[[], str], key: str, run_id: str, payments: int,
            clients: int, refund_every: int, result: BurstResult, deadline: float) -> None:
    mine: list[tuple[int, str]] = []
    try:
        for number in range(index, payments, clients):
            body = {"amount": 1000 + number, "currency": "brl" if number % 2 else "usd",
                    "payment_method": "pm_card_visa", "confirm": True}
            status, payment = call_until_answered(
                f"{base()}/api/v1/payments", key, body, idempotency_key=f"{run_id}-pay-{number}",
                deadline=deadline)
            if status != 202:
                raise RuntimeError(f"create {number}: {status} {payment}")
            with result.lock:
                result.payments[payment["id"]] = body
            mine.append((number, payment["id"]))
        for number, payment_id in mine:
            if number % refund_every:
                continue
            while True:  # a refund needs the capture first
                _, payment = call_until_answered(f"{base()}/api/v1/payments/{payment_id}", key,
                                                 deadline=deadline)
                if payment.get("status") in FINAL_PAYMENT:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{payment_id} never captured")
                time.sleep(0.25)  # polling the API for the capture, bounded by the deadline
            if payment["status"] != "captured":
                raise RuntimeError(f"{payment_id} ended {payment['status']}")
            amount = payment["amount"] // 2
            status, refund = call_until_answered(
                f"{base()}/api/v1/refunds", key, {"payment": payment_id, "amount": amount},
                idempotency_key=f"{run_id}-refund-{number}", deadline=deadline)
            if status not in (200, 201):
                raise RuntimeError(f"refund of {payment_id}: {status} {refund}")
            with result.lock:
                result.refunds[payment_id] = amount
    except Exception as exc:  # reported by the caller with every other client's
        with result.lock:
            result.errors.append(f"client {index}: {type(exc).__name__}: {exc}")


def burst(*, base: Callable[[], str], key: str, run_id: str, payments: int = 240,
          clients: int = 12, refund_every: int = 4, timeout: float = 900,
          while_running: Callable[[BurstResult], None] | None = None) -> BurstResult:
    """Run the clients to the end; `while_running(result)` runs in this thread meanwhile (the
    recovery variant kills and restarts the stack there). `base()` is read per request, so a
    restarted stack may be on another port."""
    result = BurstResult(started=time.monotonic())
    deadline = result.started + timeout
    threads = [threading.Thread(target=_client, args=(index,), kwargs={
        "base": base, "key": key, "run_id": run_id, "payments": payments, "clients": clients,
        "refund_every": refund_every, "result": result, "deadline": deadline}, daemon=True)
        for index in range(clients)]
    for thread in threads:
        thread.start()
    if while_running is not None:
        while_running(result)
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
    result.clients_done = time.monotonic()
    return result


def not_final(result: BurstResult) -> tuple[int, int]:
    """Payments and refunds of the burst that are not final yet (read from the database)."""
    from payments.models import Payment, Refund

    payments = Payment.objects.filter(pk__in=list(result.payments)).exclude(
        status__in=FINAL_PAYMENT).count()
    refunds = Refund.objects.filter(payment_id__in=list(result.refunds)).exclude(
        status__in=("succeeded", "failed")).count()
    return payments, refunds


def wait_all_final(result: BurstResult, *, timeout: float, poll: float = 0.5) -> float | None:
    """Seconds from the first request until everything was final, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not result.errors and not any(not_final(result)):
            return time.monotonic() - result.started
        if result.errors:
            return None
        time.sleep(poll)  # polling the database for the workers' effect, bounded
    return None


# -- the other merchant's dead endpoints -----------------------------------------------------
def dead_endpoints(*, base: str, count: int = 3, payments: int = 40) -> dict[str, Any]:
    """Another merchant with `count` webhook endpoints that refuse connections (a port nobody
    listens on) and `payments` captured payments, so their deliveries are owed; returns the
    merchant and key. Their retries are then made due (`dead_retries_due`)."""
    from core.services import merchant_create

    merchant, issued = merchant_create(name="Dead endpoints Ltd", is_live=False)
    key = issued.raw_key
    for index in range(count):
        closed = socket.create_server(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens here any more: connection refused
        status, answer = call(f"{base}/api/v1/webhook_endpoints", key, {
            "url": f"http://127.0.0.1:{port}/hooks/{index}", "enabled_events": ["*"]})
        if status not in (200, 201):
            raise RuntimeError(f"webhook endpoint: {status} {answer}")
    deadline = time.monotonic() + 300
    for number in range(payments):
        call_until_answered(f"{base}/api/v1/payments", key, {
            "amount": 500 + number, "currency": "usd", "payment_method": "pm_card_visa",
            "confirm": True}, idempotency_key=f"dead-{number}", deadline=deadline)
    return {"merchant_id": merchant.pk, "key": key}


def dead_deliveries(merchant_id: str) -> dict[str, int]:
    from webhooks.models import WebhookDelivery, WebhookDeliveryAttempt

    owed = WebhookDelivery.objects.filter(endpoint__merchant_id=merchant_id)
    return {"deliveries": owed.count(),
            "pending": owed.filter(status="pending").count(),
            "attempts": WebhookDeliveryAttempt.objects.filter(
                delivery__endpoint__merchant_id=merchant_id).count()}


def dead_retries_due(merchant_id: str) -> int:
    """Every delivery still owed to the dead endpoints is due now, and their circuits are
    closed: the worst moment for the burst to start (each retry competes for workers)."""
    from django.utils import timezone

    from webhooks.models import WebhookDelivery, WebhookEndpoint

    WebhookEndpoint.objects.filter(merchant_id=merchant_id).update(circuit_open_until=None,
                                                                    consecutive_failures=0)
    return WebhookDelivery.objects.filter(endpoint__merchant_id=merchant_id,
                                          status="pending").update(
        next_attempt_at=timezone.now(), locked_until=None)


# -- what must hold afterwards ---------------------------------------------------------------
def verdict(result: BurstResult, *, simulator_url: str, janitor_since: datetime | None = None
            ) -> list[str]:
    """Every problem found with the money after a burst; empty when all is well."""
    from django.db.models import Count, Sum

    from ledger.models import JournalEntry
    from ledger.verify import ledger_verify
    from payments.models import Payment, Refund
    from providers.models import SandboxCharge
    from providers.simulator.control import ControlClient
    from reconciliation.models import JobRun

    problems = list(result.errors)
    rows = {p.pk: p for p in Payment.objects.filter(pk__in=list(result.payments))}
    if len(rows) != len(result.payments):
        problems.append(f"{len(result.payments) - len(rows)} payments missing")
    wrong = {pk: p.status for pk, p in rows.items() if p.status not in CHARGED}
    if wrong:
        problems.append(f"{len(wrong)} payments not charged and final: "
                        f"{dict(list(wrong.items())[:5])}")
    refunds = {row["payment_id"]: row for row in Refund.objects.filter(
        payment_id__in=list(rows)).values("payment_id").annotate(
        n=Count("id"), total=Sum("amount"))}
    for payment_id, amount in result.refunds.items():
        found = refunds.get(payment_id)
        if (found is None or found["n"] != 1 or found["total"] != amount
                or rows[payment_id].amount_refunded != amount):
            problems.append(f"refund of {payment_id}: asked {amount}, found {found}, "
                            f"amount_refunded {rows[payment_id].amount_refunded}")
    unasked = set(refunds) - set(result.refunds)
    if unasked:
        problems.append(f"refunds nobody asked for on {sorted(unasked)[:5]}")
    pending = Refund.objects.filter(payment_id__in=list(rows)).exclude(status="succeeded")
    if pending.exists():
        problems.append(f"{pending.count()} refunds not succeeded")
    captures = dict(JournalEntry.objects.filter(kind="capture", reference_id__in=list(rows))
                    .values_list("reference_id").annotate(n=Count("id")))
    twice = {pk: n for pk, n in captures.items() if n != 1}
    missing = [pk for pk in rows if pk not in captures]
    if twice or missing:
        problems.append(f"ledger capture entries: {len(twice)} payments with more than one, "
                        f"{len(missing)} with none")
    usd = [pk for pk, body in result.payments.items() if body["currency"] == "usd"]
    sandbox = dict(SandboxCharge.objects.filter(merchant_reference__in=usd)
                   .values_list("merchant_reference").annotate(n=Count("reference")))
    if any(sandbox.get(pk) != 1 for pk in usd):
        problems.append("sandbox charges per USD payment: "
                        f"{sorted(set(sandbox.get(pk, 0) for pk in usd))} (want exactly 1)")
    control = ControlClient(simulator_url)
    if doubled := control.double_charged():
        problems.append(f"charged twice at the simulator: {doubled[:5]}")
    charged = {}
    for charge in control.charges():
        if charge["is_charged"]:
            charged[charge["order_id"]] = charged.get(charge["order_id"], 0) + 1
    brl = [pk for pk, body in result.payments.items() if body["currency"] == "brl"]
    if any(charged.get(pk) != 1 for pk in brl):
        problems.append("simulator charges per BRL payment: "
                        f"{sorted(set(charged.get(pk, 0) for pk in brl))} (want exactly 1)")
    verified = ledger_verify()
    if not verified.ok:
        problems.append("ledger_verify: " + verified.report())
    if janitor_since is not None and not JobRun.objects.filter(
            job="recon_janitor", started_at__gte=janitor_since, finished_at__isnull=False,
            error="").exists():
        problems.append("no janitor run finished during the recovery")
    return problems


# -- the variants ----------------------------------------------------------------------------
@dataclass
class Measured:
    seconds_to_final: float | None
    client_seconds: float
    result: BurstResult
    stack: Stack
    details: dict[str, Any] = field(default_factory=dict)


def measure(*, database_url: str, work_dir: Path, name: str, payments: int = 240,
            clients: int = 12, dead: int = 0, kill_workers_after: int | None = None,
            timeout: float = 900, extra_env: dict[str, str] | None = None) -> Measured:
    """Start the stack, run one burst (with `dead` refusing endpoints of another merchant, and
    the workers killed after `kill_workers_after` payments when given), wait for every payment
    and refund to be final. The stack is left running for `verdict`; the caller stops it."""
    state = work_dir / name
    state.mkdir(parents=True, exist_ok=True)
    env = stack_env(state_dir=state, database_url=database_url, port=free_port(),
                    **{"SIMULATOR_STATE_FILE": str(work_dir / "simulator" / "books.pickle"),
                       **(extra_env or {})})
    stack = Stack(env, work_dir / f"{name}.log")
    holder = {"stack": stack}  # the crash replaces it with the restarted stack
    details: dict[str, Any] = {}
    try:
        key = stack.ready()
        other = dead_endpoints(base=stack.base, count=dead)
        if dead:
            drain = time.monotonic() + 120  # every delivery tried once: retries in flight
            while dead_deliveries(other["merchant_id"])["attempts"] < dead and \
                    time.monotonic() < drain:
                time.sleep(0.5)  # polling the workers' effect, bounded
            details["dead_retries_made_due"] = dead_retries_due(other["merchant_id"])
            details["dead_before"] = dead_deliveries(other["merchant_id"])

        def crash_and_restart(result: BurstResult) -> None:
            if kill_workers_after is None:
                return
            while len(result.payments) < kill_workers_after and not result.errors:
                time.sleep(0.05)  # waiting for the burst to reach the crash point, bounded
            details["killed_workers"] = len(holder["stack"].kill_workers())
            details["killed_at_payments"] = len(result.payments)
            details["killed_after_seconds"] = round(time.monotonic() - result.started, 1)
            holder["stack"].wait_exit()  # run.py sees a worker die and stops the rest
            from django.utils import timezone

            details["restarted_at"] = timezone.now()
            holder["stack"] = Stack(env, work_dir / f"{name}.log")
            holder["stack"].ready()
            details["restart_seconds"] = round(
                time.monotonic() - result.started - details["killed_after_seconds"], 1)

        result = burst(base=lambda: holder["stack"].base, key=key, run_id=name, payments=payments,
                       clients=clients, timeout=timeout, while_running=crash_and_restart)
        stack = holder["stack"]
        seconds = wait_all_final(result, timeout=timeout)
        if dead:
            details["dead_after"] = dead_deliveries(other["merchant_id"])
            from core.models import Merchant
            from webhooks import selectors as webhook_selectors
            from webhooks import services as webhook_services

            merchant = Merchant.objects.get(pk=other["merchant_id"])
            for endpoint in webhook_selectors.endpoint_list(merchant=merchant):
                webhook_services.endpoint_update(merchant=merchant, endpoint_id=endpoint.pk,
                                                 disabled=True)
        return Measured(seconds_to_final=seconds,
                        client_seconds=result.clients_done - result.started,
                        result=result, stack=stack, details=details)
    except BaseException:
        holder["stack"].stop()
        raise


def run(plan: Any, work_dir: Path) -> tuple[dict[str, Any], Any]:
    """`BENCH_ONLY=burst python -m bench`: (a) plain and (b) with three dead endpoints, each
    BENCH_RUNS times alternated, then one recovery run; gates on the money after each."""
    from django.conf import settings

    from bench import gates
    from bench.runtime import bench_database_name, database_url

    # This process's ledger_verify reads the checkpoints the stacks export (stack_env).
    settings.LEDGER_CHECKPOINT_DIR = os.environ.get("LEDGER_CHECKPOINT_DIR") or str(
        work_dir / "ledger-checkpoints")
    payments = int(os.environ.get("BENCH_BURST_PAYMENTS", "240"))
    clients = int(os.environ.get("BENCH_BURST_CLIENTS", "12"))
    url = database_url(bench_database_name())
    deadlocks_before = gates.deadlock_count()
    extra: list[gates.Gate] = []
    seconds: dict[str, list[float | None]] = {"plain": [], "dead_endpoints": []}
    details: dict[str, list[dict[str, Any]]] = {"plain": [], "dead_endpoints": []}
    variants = [("plain", 0), ("dead_endpoints", 3)]
    # BENCH_BURST_PARTS=ratio,recovery (the default): the two variants, the crash, or both.
    parts = set(os.environ.get("BENCH_BURST_PARTS", "ratio,recovery").split(","))
    for run_index in range(plan.runs if "ratio" in parts else 0):
        for variant, dead in variants:
            name = f"{variant}-{run_index + 1}"
            print(f"  burst {name}: {payments} payments, {clients} clients", flush=True)
            measured = measure(database_url=url, work_dir=work_dir, name=name,
                               payments=payments, clients=clients, dead=dead)
            try:
                problems = verdict(measured.result, simulator_url=measured.stack.simulator)
            finally:
                measured.stack.stop()
            extra.append(gates.Gate(f"burst_{name}_money", not problems, "; ".join(problems)))
            extra.append(gates.Gate(f"burst_{name}_final", measured.seconds_to_final is not None,
                                    "every payment and refund final"))
            seconds[variant].append(measured.seconds_to_final)
            details[variant].append({**measured.details,
                                     "client_seconds": round(measured.client_seconds, 1)})
            print(f"    all final after {measured.seconds_to_final} s "
                  f"(clients {measured.client_seconds:.1f} s) {measured.details}", flush=True)
        variants.reverse()  # alternate which goes first
    recovery: dict[str, Any] = {}
    if "recovery" in parts:
        print("  burst recovery: workers SIGKILLed mid-burst, stack restarted", flush=True)
        measured = measure(database_url=url, work_dir=work_dir, name="recovery",
                           payments=payments, clients=clients,
                           kill_workers_after=payments // 2,
                           extra_env={"RECON_JANITOR_INTERVAL_SECONDS": "5",
                                      "RECON_JANITOR_GRACE_SECONDS": "10"})
        try:
            problems = verdict(measured.result, simulator_url=measured.stack.simulator,
                               janitor_since=measured.details.get("restarted_at"))
        finally:
            measured.stack.stop()
        extra.append(gates.Gate("burst_recovery_money", not problems, "; ".join(problems)))
        extra.append(gates.Gate("burst_recovery_final", measured.seconds_to_final is not None,
                                "every payment and refund final after the restart"))
        recovery = {**{k: v for k, v in measured.details.items() if k != "restarted_at"},
                    "seconds_to_final": measured.seconds_to_final,
                    "client_seconds": round(measured.client_seconds, 1)}
        print(f"    all final after {measured.seconds_to_final} s {recovery}", flush=True)

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known and len(known) == len(values) else None

    plain, dead = median(seconds["plain"]), median(seconds["dead_endpoints"])
    # Not "seconds": bench/__main__.py stores the scenario's own duration under that key.
    result = {"payments": payments, "clients": clients, "seconds_to_final": seconds,
              "details": details,
              "median": {"plain_seconds": plain, "dead_endpoints_seconds": dead,
                         "ratio": dead / plain if plain and dead else None},
              "recovery": recovery}
    report = gates.check("burst", deadlocks_before=deadlocks_before, extra=extra)
    return result, report
