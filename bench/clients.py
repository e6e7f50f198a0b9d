"""Concurrent clients as forked processes: N processes run one operation in a loop for a while.

Processes, not threads, because every client of the ledger in production is its own process
(a gunicorn worker, a Celery child) and a thread pool would measure the GIL instead. The parent
has Django set up and closes its connections before forking, so each child opens its own.
Children start together on a barrier and report their counts and latencies through a pipe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.stats import percentile

# An operation is built in the child (it may open connections) from (client index, its seed),
# and called with a running sequence number; it returns nothing, or raises.
Operation = Callable[[int], None]
OperationFactory = Callable[[int], Operation]
DEADLOCK = "40P01"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, whether psycopg's own or Django's wrapper of it."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        state = getattr(candidate, "sqlstate", None)
        if state:
            return state
    return None


@dataclass
class ClientsResult:
    clients: int
    seconds: float
    operations: int
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    @property
    def deadlocks(self) -> int:
        return self.errors.get(DEADLOCK, 0)

    def as_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "seconds": round(self.seconds, 3),
                "operations": self.operations, "per_second": round(self.per_second, 1),
                "errors": dict(self.errors),
                "p50_ms": percentile(self.latencies_ms, 0.5),
                "p99_ms": percentile(self.latencies_ms, 0.99)}


def _child(index: int, factory: OperationFactory, duration: float, barrier: Any,
           pipe: Any) -> None:
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    done = 0
    try:
        operation = factory(index)
        barrier.wait(timeout=120)
        started = time.perf_counter()
        deadline = started + duration
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            began = time.perf_counter()
            try:
                operation(sequence)
                done += 1
                latencies.append((time.perf_counter() - began) * 1000)
            except Exception as exc:  # counted by kind; the gates decide what is fatal
                errors[sqlstate(exc) or type(exc).__name__] += 1
        pipe.send((done, time.perf_counter() - started, dict(errors), latencies))
    except BaseException as exc:
        barrier.abort()  # the others (and the parent) must not wait for a client that died
        pipe.send((0, 0.0, {f"client_crashed:{type(exc).__name__}: {exc}"[:200]: 1}, []))
        raise
    finally:
        pipe.close()


def fork_together(count: int, target: Callable[..., None],
                  args: Callable[[int], tuple[Any, ...]], *, start_timeout: float,
                  died: Any) -> tuple[list[Any], float]:
    """Fork `count` processes running target(*args(index), barrier, pipe), released together
    by the barrier; each sends one report through its pipe. Returns the reports (`died` for a
    process that sent none) and the seconds from release to the last report."""
    from django.db import connections

    connections.close_all()  # a forked child must never share the parent's socket
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(count + 1)
    pipes, processes = [], []
    for index in range(count):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=target, args=(*args(index), barrier, sender),
                                  daemon=True)
        process.start()
        sender.close()
        pipes.append(receiver)
        processes.append(process)
    # A child that failed to start breaks the barrier; its report below says why.
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=start_timeout)
    started = time.perf_counter()
    reports = []
    for receiver in pipes:
        try:
            reports.append(receiver.recv())
        except EOFError:
            reports.append(died)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join(timeout=60)
    return reports, elapsed


def run_clients(clients: int, duration: float, factory: OperationFactory) -> ClientsResult:
    """Fork `clients` processes, each running factory(index)(sequence) for `duration` seconds."""
    reports, _ = fork_together(clients, _child, lambda index: (index, factory, duration),
                               start_timeout=120, died=(0, 0.0, {"client_died": 1}, []))
    result = ClientsResult(clients=clients, seconds=0.0, operations=0)
    for done, elapsed, errors, latencies in reports:
        result.operations += done
        result.seconds = max(result.seconds, elapsed)
        result.errors.update(errors)
        result.latencies_ms.extend(latencies)
    return result
