"""The HTTP load generator: an asyncio httpx client, run as its own process (`python -m
bench.loadgen < plan.json`), so that it never shares an interpreter with the server it measures.

A plan is a list of phases. A *closed* phase keeps `concurrency` requests in flight for
`duration` seconds (throughput at that concurrency). An *open* phase sends at a fixed arrival
rate, or at `fraction` of the saturation rate measured earlier in the same plan for a kind
(the mean of its two best closed-loop rates), and times each request from the moment it was
due, not from when it was sent, so a slow server cannot hide its queueing (no coordinated
omission). It prints one JSON document.

Kinds: `constant` (GET the baseline endpoint), `create` (POST a confirmed payment with a new
Idempotency-Key) and `replay` (POST again a request `create` already made: same key, same body,
expecting the stored answer with `Idempotent-Replayed: true`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.stats import percentile

REPLAY_POOL_SIZE = 256
OPEN_LOOP_CONNECTIONS = 64
TIMEOUT = httpx.Timeout(30.0, pool=60.0)  # pool: open-loop requests may queue for a connection


@dataclass
class Outcome:
    ok: bool
    status: str  # "202", "500", "not_replayed", "ConnectError", …


@dataclass
class Target:
    """Builds requests for a plan and checks their answers."""

    base_url: str
    api_key: str
    replay_pool: list[tuple[str, bytes]] = field(default_factory=list)
    created: int = 0  # 202 answers to `create`: payments the server says it made
    _replay_cycle: Any = None
    _sequence: Any = field(default_factory=itertools.count)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}

    async def send(self, client: httpx.AsyncClient, kind: str) -> Outcome:
        try:
            if kind == "constant":
                response = await client.get("/api/v1/bench/constant", headers=self.headers())
                return Outcome(response.status_code == 200, str(response.status_code))
            if kind == "create":
                # Letters dominate a token_urlsafe key; a uuid4 spells a Luhn-valid run of
                # digits about once in 500 keys, which the API refuses as card data (400).
                key = f"bench-{secrets.token_urlsafe(18)}"
                body = json.dumps({"amount": 1000 + next(self._sequence) % 9000,
                                   "currency": "usd", "payment_method": "pm_card_visa",
                                   "confirm": True}).encode()
                response = await client.post("/api/v1/payments", content=body, headers=self.headers(
                    **{"Idempotency-Key": key, "Content-Type": "application/json"}))
                if response.status_code == 202:
                    self.created += 1
                    if len(self.replay_pool) < REPLAY_POOL_SIZE:
                        self.replay_pool.append((key, body))
                return Outcome(response.status_code == 202, str(response.status_code))
            if kind == "replay":
                if self._replay_cycle is None:
                    if not self.replay_pool:
                        return Outcome(False, "no_payment_to_replay")
                    self._replay_cycle = itertools.cycle(list(self.replay_pool))
                key, body = next(self._replay_cycle)
                response = await client.post("/api/v1/payments", content=body, headers=self.headers(
                    **{"Idempotency-Key": key, "Content-Type": "application/json"}))
                replayed = response.headers.get("Idempotent-Replayed") == "true"
                if response.status_code == 202 and not replayed:
                    return Outcome(False, "not_replayed")
                return Outcome(response.status_code == 202, str(response.status_code))
        except httpx.HTTPError as exc:
            return Outcome(False, type(exc).__name__)
        raise ValueError(f"unknown request kind {kind!r}")


@dataclass
class Recorder:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    def add(self, outcome: Outcome, latency_s: float) -> None:
        self.latencies_ms.append(latency_s * 1000)
        self.statuses[outcome.status] += 1
        self.errors += not outcome.ok


def _client(target: Target, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=target.base_url, timeout=TIMEOUT, trust_env=False,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


async def closed_loop(target: Target, kind: str, concurrency: int, duration: float
                      ) -> tuple[Recorder, float]:
    recorder = Recorder()
    async with _client(target, concurrency) as client:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                outcome = await target.send(client, kind)
                recorder.add(outcome, time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return recorder, elapsed


async def open_loop(target: Target, kind: str, rate: float, duration: float
                    ) -> tuple[Recorder, float]:
    recorder = Recorder()
    total = max(1, int(rate * duration))
    async with _client(target, OPEN_LOOP_CONNECTIONS) as client:
        started = time.perf_counter()

        async def one(due: float) -> None:
            outcome = await target.send(client, kind)
            recorder.add(outcome, time.perf_counter() - due)  # from when it was due

        tasks = []
        for index in range(total):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return recorder, elapsed


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    target = Target(base_url=plan["base_url"], api_key=plan["api_key"])
    closed: dict[str, list[float]] = {}  # closed-loop rates per kind so far
    best: dict[str, float] = {}  # "saturation": the mean of the two best closed-loop rates
    results = []
    for phase in plan["phases"]:
        kind, mode = phase["kind"], phase["mode"]
        cpu_before = _cpu_seconds()
        if mode == "closed":
            recorder, elapsed = await closed_loop(target, kind, phase["concurrency"],
                                                  phase["duration"])
            rate_target = None
        else:
            rate_target = phase.get("rate") or best.get(phase["of"], 0) * phase["fraction"]
            if not rate_target:
                raise ValueError(f"phase {phase['name']}: no saturation measured for "
                                 f"{phase.get('of')!r} yet")
            recorder, elapsed = await open_loop(target, kind, rate_target, phase["duration"])
        count = len(recorder.latencies_ms)
        rps = count / elapsed if elapsed else 0.0
        if mode == "closed" and phase.get("record", True):
            # Two levels, not the single best: one lucky second on a shared machine would
            # otherwise set the open-loop rate above what the server really sustains.
            top = sorted([*closed.get(kind, []), rps], reverse=True)
            closed[kind] = top
            best[kind] = sum(top[:2]) / len(top[:2])
        results.append({
            "name": phase["name"], "kind": kind, "mode": mode,
            "concurrency": phase.get("concurrency"), "rate_target": rate_target,
            "record": phase.get("record", True),
            "requests": count, "errors": recorder.errors, "statuses": dict(recorder.statuses),
            "seconds": round(elapsed, 3), "rps": round(rps, 1),
            "p50_ms": percentile(recorder.latencies_ms, 0.50),
            "p90_ms": percentile(recorder.latencies_ms, 0.90),
            "p99_ms": percentile(recorder.latencies_ms, 0.99),
            "max_ms": max(recorder.latencies_ms, default=None),
            "loadgen_cpu_seconds": round(_cpu_seconds() - cpu_before, 3),
        })
    return {"phases": results, "saturation_rps": best, "created": target.created}


def main() -> None:
    plan = json.load(sys.stdin)
    json.dump(asyncio.run(run(plan)), sys.stdout)


if __name__ == "__main__":
    main()
