"""Outbound webhooks from the simulated providers, with faults: dropped, duplicated, delayed,
reordered (adjacent events swapped), retried on non-2xx. Each send is signed at send time."""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from providers.simulator.engine import Book, SimEvent
from providers.simulator.wire import Dialect, iso

if TYPE_CHECKING:
    from providers.simulator.server import Simulator

logger = logging.getLogger(__name__)
SEND_TIMEOUT_SECONDS = 5.0
DUPLICATE_GAP_SECONDS = 0.02
# The simulator only ever talks to the callback URL it was given; never through a proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Scheduler:
    """One background thread that runs callables at their due time, in due order (ties in the
    order they were scheduled), so webhook order is exactly what the fault dice decided."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="simulator-scheduler",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self._thread.join(timeout=SEND_TIMEOUT_SECONDS + 1)

    def clear(self) -> None:
        with self._wake:
            self._heap.clear()

    def call_later(self, delay_seconds: float, function: Callable[[], None]) -> None:
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay_seconds),
                                        next(self._sequence), function))
            self._wake.notify_all()

    def idle(self) -> bool:
        with self._wake:
            return not self._heap

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (
                        not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                _, _, function = heapq.heappop(self._heap)
            try:
                function()
            except Exception:  # a faulty callback must not stop every later one
                logger.exception("simulator scheduled task failed")


@dataclass
class Pending:
    record: dict[str, Any]
    body: bytes
    url: str
    secret: str
    copies: int
    delay_seconds: float
    max_attempts: int
    retry_seconds: float
    dialect: Dialect
    deliveries: list[dict[str, Any]] = field(default_factory=list)


class WebhookSender:
    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.log: list[dict[str, Any]] = []  # every event, its fate and each delivery attempt
        self._held: dict[str, Pending] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.log.clear()
            self._held.clear()

    def emit(self, book: Book, events: list[SimEvent]) -> None:
        for event in events:
            self._emit_one(book, event)

    def _emit_one(self, book: Book, event: SimEvent) -> None:
        config, dialect = book.config, self.simulator.dialects[book.provider]
        with self._lock:
            drop, duplicate, jitter, reorder = (book.webhook_rng.random() for _ in range(4))
            payload = dialect.webhook_payload(event, book)
            body = json.dumps(payload, separators=(",", ":")).encode()
            record: dict[str, Any] = {
                "id": event.id, "provider": book.provider, "type": event.type,
                "occurred_at": iso(event.occurred_at), "url": config.webhook_url,
                "payload": payload, "fate": "", "copies": 0, "deliveries": [],
            }
            self.log.append(record)
            if config.webhook_events is not None and event.type not in config.webhook_events:
                record["fate"] = "filtered"
                return
            if not config.webhook_url:
                record["fate"] = "no_url"
                return
            if drop < config.webhook_drop_rate:
                record["fate"] = "dropped"
                return
            copies = 1 + (config.webhook_duplicates if duplicate < config.webhook_duplicate_rate
                          else 0)
            pending = Pending(
                record=record, body=body, url=config.webhook_url, secret=config.webhook_secret,
                copies=copies, dialect=dialect,
                delay_seconds=(config.webhook_delay_ms
                               + jitter * config.webhook_delay_jitter_ms) / 1000,
                max_attempts=max(1, config.webhook_max_attempts),
                retry_seconds=config.webhook_retry_ms / 1000, deliveries=record["deliveries"],
            )
            record["copies"] = copies
            held = self._held.pop(book.provider, None)
            if held is None and reorder < config.webhook_reorder_rate:
                # Hold this one back until the next event overtakes it (or the window ends).
                record["fate"] = "held"
                self._held[book.provider] = pending
                self.simulator.scheduler.call_later(
                    config.webhook_reorder_window_ms / 1000,
                    lambda: self._release(book.provider, pending))
                return
            self._schedule(pending, pending.delay_seconds)
            if held is not None:
                held.record["fate"] = "reordered"
                self._schedule(held, pending.delay_seconds)

    def _release(self, provider: str, pending: Pending) -> None:
        with self._lock:
            if self._held.get(provider) is not pending:
                return
            del self._held[provider]
            pending.record["fate"] = "sent_late"
            self._schedule(pending, 0)

    def _schedule(self, pending: Pending, delay_seconds: float) -> None:
        if not pending.record["fate"]:
            pending.record["fate"] = "sent"
        for copy in range(pending.copies):
            self.simulator.scheduler.call_later(
                delay_seconds + copy * DUPLICATE_GAP_SECONDS,
                lambda copy=copy: self._send(pending, copy, 1))

    def _send(self, pending: Pending, copy: int, attempt: int) -> None:
        headers = {"Content-Type": "application/json",
                   "User-Agent": f"{pending.dialect.code}-webhooks/1.0 (simulator)",
                   **pending.dialect.webhook_headers(pending.secret, pending.body, time.time())}
        # S310: the URL's scheme is checked (http/https only) when the config is set.
        request = urllib.request.Request(pending.url, data=pending.body, headers=headers,  # noqa: S310
                                         method="POST")
        status, error = None, ""
        try:
            with _OPENER.open(request, timeout=SEND_TIMEOUT_SECONDS) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:  # refused, reset, timed out: the receiver never answered
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            pending.deliveries.append({"copy": copy, "attempt": attempt, "status": status,
                                       "error": error, "at": time.time()})
        if (status is None or not 200 <= status < 300) and attempt < pending.max_attempts:
            self.simulator.scheduler.call_later(
                pending.retry_seconds * 2 ** (attempt - 1),
                lambda: self._send(pending, copy, attempt + 1))

    def snapshot(self, provider: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(r)) for r in self.log
                    if not provider or r["provider"] == provider]
