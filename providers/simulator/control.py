"""Driving a running simulator from tests and scripts: a small control-API client, a context
manager that runs one in-process, and a webhook recorder listening on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from providers.simulator.server import SimulatorHTTPServer, start_simulator, stop_simulator

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ControlClient:
    """The `/_control` API over HTTP (so it works against `make run`'s simulator too)."""

    def __init__(self, base_url: str) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        self.base_url = base_url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            f"{self.base_url}/_control{path}", data=data, method=method,
            headers={"Content-Type": "application/json"})
        with _OPENER.open(request, timeout=10) as response:
            return json.loads(response.read())

    def reset(self, seed: str | int | None = None) -> dict[str, Any]:
        return self._call("POST", "/reset", {} if seed is None else {"seed": seed})

    def configure(self, provider: str, **changes: Any) -> dict[str, Any]:
        return self._call("POST", f"/{provider}/config", changes)

    def config(self, provider: str) -> dict[str, Any]:
        return self._call("GET", f"/{provider}/config")

    def charges(self, provider: str = "", order_id: str = "") -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in (("provider", provider), ("order_id", order_id))
                         if v)
        return self._call("GET", f"/charges?{query}")["charges"]

    def double_charged(self) -> list[str]:
        return self._call("GET", "/charges")["double_charged"]

    def movements(self, provider: str = "") -> list[dict[str, Any]]:
        return self._call("GET", f"/movements?provider={provider}")["movements"]

    def webhooks(self, provider: str = "") -> list[dict[str, Any]]:
        return self._call("GET", f"/webhooks?provider={provider}")["webhooks"]

    def freeze_clock(self, frozen_at: str | None) -> dict[str, Any]:
        return self._call("POST", "/clock", {"frozen_at": frozen_at})

    def open_dispute(self, provider: str, reference: str, amount: int | None = None,
                     reason: str = "fraudulent") -> dict[str, Any]:
        return self._call("POST", f"/{provider}/disputes",
                          {"reference": reference, "amount": amount, "reason": reason})

    def disputes(self, provider: str = "") -> list[dict[str, Any]]:
        return self._call("GET", f"/disputes?provider={provider}")["disputes"]

    def decide_dispute(self, provider: str, reference: str, *, won: bool | None = None
                       ) -> dict[str, Any]:
        return self._call("POST", f"/{provider}/disputes/{reference}/decide", {"won": won})

    def complete(self, provider: str, kind: str, reference: str, *, succeed: bool = True
                 ) -> dict[str, Any]:
        return self._call("POST", f"/{provider}/{kind}s/{reference}/complete",
                          {"succeed": succeed})


@dataclass
class RunningSimulator:
    server: SimulatorHTTPServer
    base_url: str
    control: ControlClient


@contextmanager
def running_simulator(seed: str = "0") -> Iterator[RunningSimulator]:
    """An in-process simulator on an ephemeral 127.0.0.1 port, stopped on exit."""
    server, base_url = start_simulator(0, seed=seed)
    try:
        yield RunningSimulator(server, base_url, ControlClient(base_url))
    finally:
        stop_simulator(server)


@dataclass
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookRecorder:
    """Collects webhook POSTs on 127.0.0.1; `wait_for` blocks until a condition holds (no
    sleeping in tests). `status` is what it answers (set 500 to watch the simulator retry)."""

    def __init__(self) -> None:
        self.received: list[ReceivedWebhook] = []
        self.status = 200
        self._changed = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._changed:
                    recorder.received.append(ReceivedWebhook(
                        self.path, dict(self.headers.items()), body))
                    recorder._changed.notify_all()
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> WebhookRecorder:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, condition: Callable[[list[ReceivedWebhook]], bool],
                 timeout: float = 5.0) -> list[ReceivedWebhook]:
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.received), timeout):
                raise TimeoutError(f"webhook condition not met; got {len(self.received)}")
            return list(self.received)

    def wait_count(self, count: int, timeout: float = 5.0) -> list[ReceivedWebhook]:
        return self.wait_for(lambda received: len(received) >= count, timeout)
