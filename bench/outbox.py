"""Scenario 4: drain 10,000 outbox deliveries to a local receiver with 4 worker processes.

Each run writes N events and their WebhookDelivery rows for one subscribed endpoint (the rows
`webhooks.services.event_record` writes, bulk-inserted), then forks 4 processes
that each call `delivery_sweep()` — claim with SKIP LOCKED and a lease, sign, POST from 8
threads, record — until nothing is due. The baseline is the same receiver taking signed raw
POSTs from ONE process with as many threads as one sweeper uses (8) and no database at all.

Gates on top of the common ones: every delivery `delivered` after exactly one attempt, and the
receiver saw each event exactly once with a valid signature.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import gates
from bench.clients import fork_together
from bench.runtime import ROOT, Plan, child_env
from bench.stats import median, ratio

EVENT_TYPE = "payment.captured"
RAW_THREADS = 8  # = webhooks.services.SWEEP_CONCURRENCY, the threads of one sweeper
RAW_POSTS = 3000  # a rate, not a drain: a few seconds of it is enough


class ReceiverProcess:
    """bench.receiver in a subprocess, spoken to over its stdin/stdout."""

    def __enter__(self) -> ReceiverProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver"], cwd=ROOT, env=child_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.process.stdout.readline())["port"]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    def command(self, line: str) -> dict[str, Any]:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def __exit__(self, *exc: object) -> None:
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def _events_record(merchant: Any, endpoint_id: str, count: int, tag: str) -> float:
    """Write `count` events and their deliveries: the rows `event_record` writes, inserted in
    bulk. Through the service the setup alone took over a minute per run here (an INSERT, an
    endpoint lookup and a broker publish per event), and it is not what this scenario measures;
    no task is enqueued, so the sweepers find every row due, as after a lost enqueue."""
    from django.db import transaction
    from django.utils import timezone

    from webhooks.models import Event, WebhookDelivery

    started = time.monotonic()
    with transaction.atomic():
        events = Event.objects.bulk_create([
            Event(merchant=merchant, type=EVENT_TYPE, object_type="payment",
                  object_id=f"pay_bench{tag}x{index}",
                  data={"object": "payment", "id": f"pay_bench{tag}x{index}", "amount": 1000,
                        "currency": "usd", "status": "captured"})
            for index in range(count)], batch_size=2000)
        now = timezone.now()
        WebhookDelivery.objects.bulk_create([
            WebhookDelivery(endpoint_id=endpoint_id, event=event, next_attempt_at=now)
            for event in events], batch_size=2000)
    return time.monotonic() - started


def _sweeper(barrier: Any, pipe: Any) -> None:
    from webhooks.services import delivery_sweep

    try:
        barrier.wait(timeout=60)
        started = time.perf_counter()
        attempts = delivery_sweep()
        pipe.send({"attempts": attempts, "seconds": time.perf_counter() - started})
    except BaseException as exc:
        barrier.abort()
        pipe.send({"attempts": 0, "seconds": 0.0, "error": f"{type(exc).__name__}: {exc}"})
        raise


def _drain(workers: int) -> dict[str, Any]:
    reports, elapsed = fork_together(
        workers, _sweeper, lambda index: (), start_timeout=60,
        died={"attempts": 0, "seconds": 0.0, "error": "worker died"})
    attempts = sum(r["attempts"] for r in reports)
    return {"attempts": attempts, "seconds": round(elapsed, 3),
            "per_second": round(attempts / elapsed, 1) if elapsed else None,
            "errors": [r["error"] for r in reports if "error" in r],
            "per_worker": [r["attempts"] for r in reports]}


def _raw_posts(url: str, secret: str, count: int) -> dict[str, Any]:
    """Signed POSTs of the same body size, no database: what the receiver itself allows."""
    import httpx

    from webhooks.delivery import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header

    body = json.dumps({"id": "evt_raw", "object": "event", "type": EVENT_TYPE, "data": {
        "object": {"object": "payment", "id": "pay_raw", "amount": 1000, "currency": "usd",
                   "status": "captured"}}}).encode()
    local = threading.local()
    failures = 0

    def post(index: int) -> bool:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=10.0, trust_env=False)
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: f"evt_raw{index}",
                   SIGNATURE_HEADER: signature_header(body=body, secrets=(secret,),
                                                      timestamp=int(time.time()))}
        try:
            return client.post(url, content=body, headers=headers).status_code == 200
        except httpx.HTTPError:
            return False

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=RAW_THREADS) as pool:
        failures = sum(1 for ok in pool.map(post, range(count)) if not ok)
    elapsed = time.perf_counter() - started
    return {"posts": count, "failures": failures, "seconds": round(elapsed, 3),
            "per_second": round(count / elapsed, 1)}


def run(plan: Plan) -> tuple[dict[str, Any], gates.GateReport]:
    from core.services import merchant_create
    from webhooks.models import DeliveryStatus, WebhookDelivery
    from webhooks.services import endpoint_create

    deadlocks_before = gates.deadlock_count()
    merchant, _ = merchant_create(name="Bench outbox merchant")
    count = plan.outbox_deliveries
    runs = []
    problems: list[str] = []
    with ReceiverProcess() as receiver:
        issued = endpoint_create(merchant=merchant, url=receiver.url,
                                 enabled_events=[EVENT_TYPE])
        receiver.command(f"secret {issued.secret}")
        deliveries = WebhookDelivery.objects.filter(endpoint=issued.endpoint)
        for index in range(plan.runs):
            receiver.command("reset")
            raw = _raw_posts(receiver.url, issued.secret, min(count, RAW_POSTS))
            receiver.command("reset")
            setup_seconds = _events_record(merchant, issued.endpoint.pk, count, f"r{index}")
            print(f"  outbox run {index + 1}: {count} events recorded in {setup_seconds:.1f} s",
                  flush=True)
            drained = _drain(plan.outbox_workers)
            stats = receiver.command("stats")
            this_run = deliveries.filter(event__object_id__startswith=f"pay_benchr{index}x")
            delivered = this_run.filter(status=DeliveryStatus.DELIVERED, attempt_count=1).count()
            if delivered != count or drained["errors"]:
                problems.append(f"run {index + 1}: {delivered}/{count} delivered after one "
                                f"attempt; worker errors {drained['errors']}")
            if (stats["unique_events"] != count or stats["duplicates"]
                    or stats["verified"] != count):
                problems.append(f"run {index + 1}: receiver {stats}")
            runs.append({"raw": raw, "outbox": drained, "receiver": stats,
                         "setup_seconds": round(setup_seconds, 1),
                         "ratio": ratio(drained["per_second"], raw["per_second"])})
            print(f"  outbox run {index + 1}/{plan.runs}: {drained['per_second']}/s vs raw "
                  f"{raw['per_second']}/s", flush=True)
    report = gates.check("outbox", deadlocks_before=deadlocks_before, extra=[
        gates.Gate("every_delivery_sent_once", not problems, "; ".join(problems) or
                   f"{count} × {plan.runs} delivered once each, all signatures valid")])
    result = {
        "deliveries": count, "workers": plan.outbox_workers, "raw_threads": RAW_THREADS,
        "runs": runs,
        "median": {
            "outbox_per_second": median([r["outbox"]["per_second"] for r in runs]),
            "raw_per_second": median([r["raw"]["per_second"] for r in runs]),
            "ratio": median([r["ratio"] for r in runs]),
        },
    }
    return result, report
