"""A small webhook receiver (stdlib http.server in a thread) for tests and the local demo.

It checks every request with `webhooks.verify.verify_signature`, the same code merchants are
told to copy, records what arrived, and answers with a scripted sequence of statuses.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from webhooks.verify import verify_signature

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None  # None when the receiver was given no secrets

    @property
    def event_id(self) -> str:
        return self.headers.get("Clearhouse-Event-Id", "")


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b'{"received": true}'
    headers: tuple[tuple[str, str], ...] = ()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY_BYTES)
        body = self.rfile.read(length)
        reply = self.server.receiver.accept(
            Received(path=self.path, headers=dict(self.headers.items()), body=body,
                     verified=self.server.receiver.verify(body, self.headers)))
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests assert on `received`, not on stderr


class Receiver:
    """`with Receiver(secrets=[…], replies=[500, 500, 200]) as rx: … rx.url …`.

    `replies` are used in order, one per request; afterwards every request gets `default`."""

    def __init__(self, *, secrets: Iterable[str] = (), replies: Iterable[int | Reply] = (),
                 default: Reply | None = None, host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.secrets = list(secrets)
        self._replies = [r if isinstance(r, Reply) else Reply(status=r) for r in replies]
        self._default = default or Reply()
        self._host = host
        self._tls = tls
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "receiver not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}/webhooks"

    def verify(self, body: bytes, headers: Any) -> bool | None:
        if not self.secrets:
            return None
        return verify_signature(body, headers.get("Clearhouse-Signature", ""), self.secrets)

    def accept(self, received: Received) -> Reply:
        with self._lock:
            self.received.append(received)
            return self._replies.pop(0) if self._replies else self._default

    def event_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(r.event_id for r in self.received)

    def start(self) -> Receiver:
        server_class = _Server
        if ":" in self._host:
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._server = server_class((self._host, 0), _Handler)
        self._server.receiver = self
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
