"""The simulator's HTTP server: routes `/<provider>/…` to that provider's dialect, runs
mutations once per idempotency key with the configured faults, and serves `/_control/…`."""

from __future__ import annotations

import html
import logging
import os
import pickle
import re
import socket
import struct
import threading
from collections.abc import Callable
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from providers.simulator.cielo import CieloDialect
from providers.simulator.engine import (
    PROVIDERS,
    Book,
    Charge,
    Clock,
    ConfigError,
    DisputeCase,
    Draws,
    Fault,
    IdempotencyStore,
    Movement,
    Result,
    Scheme,
    double_charged,
    fingerprint,
)
from providers.simulator.getnet import GetnetDialect
from providers.simulator.rede import RedeDialect
from providers.simulator.webhooks import Scheduler, WebhookSender
from providers.simulator.wire import BadRequest, Dialect, Mutation, Reply, Request

logger = logging.getLogger(__name__)
# Dispute evidence carries its files (base64 in JSON): room for several of Clearhouse's 5 MiB.
MAX_BODY_BYTES = 32 * 1024 * 1024
DROP = Reply(0, b"")  # sentinel: reset the connection instead of answering
SETTLEMENT_PATH = re.compile(r"^/settlements/(?P<day>\d{4}-\d{2}-\d{2})\.csv$")


class Simulator:
    """All state of one running simulator: a book per provider, the clock, the webhook sender."""

    def __init__(self, *, seed: str = "0", settlement_dir: Path | None = None,
                 state_file: Path | None = None) -> None:
        self.state_file = state_file
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.dialects: dict[str, Dialect] = {
            d.code: d for d in (CieloDialect(), RedeDialect(), GetnetDialect())}
        self.scheduler = Scheduler()
        self.webhooks = WebhookSender(self)
        self.settlement_dir = settlement_dir
        self.clock = Clock()
        self.seed = seed
        self.books: dict[str, Book] = {}
        self.reset(seed)
        self.load()

    # -- books kept across restarts (a real acquirer never forgets a charge or reissues an id) --
    def load(self) -> None:
        """Take the books written by an earlier run (`--state-file`), if any."""
        if self.state_file is None or not self.state_file.exists():
            return
        with self.lock, self.state_file.open("rb") as handle:
            # Our own file, written by save() below in a folder only we write to.
            state = pickle.load(handle)  # noqa: S301
            self.seed, self.books = state["seed"], state["books"]
            self.clock = next(iter(self.books.values())).clock
        logger.info("simulator books loaded from %s", self.state_file)

    def save(self) -> None:
        """Write every book (charges, movements, idempotency answers, id generators) atomically,
        after each change, so a restart answers as before and never reissues a reference."""
        if self.state_file is None:
            return
        with self.lock:
            data = pickle.dumps({"seed": self.seed, "books": self.books})
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.state_file)

    def reset(self, seed: str | None = None) -> None:
        """Forget every charge, key, event and config change (tests call this between cases)."""
        with self.lock:
            self.seed = self.seed if seed is None else str(seed)
            self.clock = Clock()
            scheme = Scheme()
            self.books = {code: Book(code, self.seed, self.clock, scheme) for code in PROVIDERS}
            self.scheduler.clear()
            self.webhooks.clear()

    def configure(self, provider: str, changes: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            config = self.books[provider].config
            config.update(changes)
            return config.as_dict()

    # -- the provider APIs ---------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        head, _, rest = request.path.lstrip("/").partition("/")
        if head == "_challenge":
            return self.challenge(request, rest)
        if head == "_control":
            try:
                return self.control(request, "/" + rest)
            finally:
                if request.method != "GET":
                    self.save()
        dialect = self.dialects.get(head)
        if dialect is None:
            return Reply.json(404, {"error": f"no provider {head!r} here"})
        book = self.books[head]
        request.path = "/" + rest
        try:
            return self._provider_request(dialect, book, request)
        except BadRequest as exc:
            return dialect.error("invalid_request", exc.message)
        finally:
            with self.lock:
                pending, book.pending_events = book.pending_events, []
                self.webhooks.emit(book, pending)
            if request.method != "GET" or pending:
                self.save()

    def _provider_request(self, dialect: Dialect, book: Book, request: Request) -> Reply:
        denied = dialect.authenticate(request, book)
        if denied is not None:
            return denied
        settlement = SETTLEMENT_PATH.match(request.path)
        if settlement and request.method == "GET":
            return self.settlement(book, settlement["day"])
        found = dialect.match(request.method, request.path)
        if found is None:
            return dialect.error("not_found", f"No endpoint {request.method} {request.path}.")
        handler, request.params = found
        with self.lock:  # parsing may read the books, which other threads are changing
            answer = handler(request, book)
        operation = answer.operation if isinstance(answer, Mutation) else "read"
        with self.lock:
            method = answer.payment_method if isinstance(answer, Mutation) else ""
            draws = Draws.throw(book.fault_rng, book.config, operation,
                                book.alias(method) if method else "")
            timeout_seconds = book.config.timeout_ms / 1000
        if draws.latency_ms:
            self.stop_event.wait(draws.latency_ms / 1000)
        if isinstance(answer, Reply):
            return answer
        return self._mutate(dialect, book, request, answer, draws, timeout_seconds)

    def _mutate(self, dialect: Dialect, book: Book, request: Request, mutation: Mutation,
                draws: Draws, timeout_seconds: float) -> Reply:
        key = request.header(dialect.idempotency_header)
        if key:
            state, stored = book.idempotency.begin(
                key, fingerprint(request.method, request.raw_path, request.body),
                self.stop_event)
            if state == IdempotencyStore.MISMATCH:
                return dialect.error("idempotency_mismatch",
                                     "This idempotency key was used with a different request.")
            if state == IdempotencyStore.REPLAY:
                return Reply(stored.status, stored.body, stored.content_type,
                             {**stored.headers, "X-Simulator-Replayed": "true"})
        if draws.fault == Fault.UNAVAILABLE:
            if key:
                book.idempotency.abort(key)  # nothing happened, so a retry may act
            return dialect.error("unavailable", "Service unavailable; request not processed.")
        try:
            with self.lock:
                result = mutation.apply(draws)
                reply = mutation.render(result)
                self.webhooks.emit(book, result.events)
                self._schedule_completion(book, result)
        except Exception:
            if key:
                book.idempotency.abort(key)
            raise
        if key:
            book.idempotency.complete(key, reply)
        if draws.fault == Fault.SERVER_ERROR:
            return dialect.error("server_error", "Internal error.")
        if draws.fault == Fault.TIMEOUT:
            self.stop_event.wait(timeout_seconds)  # the client gave up long ago
        if draws.fault == Fault.DROP:
            return DROP
        return reply

    def _schedule_completion(self, book: Book, result: Result) -> None:
        delay_ms = book.config.async_completion_ms
        if result.movement is not None and result.kind == "ok" and delay_ms is not None:
            movement = result.movement
            self.scheduler.call_later(delay_ms / 1000,
                                      lambda: self.complete_movement(book, movement))
        decide_ms = book.config.dispute_decision_ms
        case = result.dispute
        if (case is not None and result.kind == "ok" and case.status == "under_review"
                and decide_ms is not None):
            self.scheduler.call_later(decide_ms / 1000, lambda: self.decide_dispute(book, case))

    def _later(self, book: Book, change: Callable[[], Result]) -> Result:
        """A change made after the request that started it (a timer, the control API): its
        events sent, the books saved; nothing when the books were reset meanwhile."""
        with self.lock:
            if self.books.get(book.provider) is not book:  # reset since it was scheduled
                return Result("not_found")
            result = change()
            self.webhooks.emit(book, result.events)
        self.save()
        return result

    def decide_dispute(self, book: Book, case: DisputeCase, won: bool | None = None) -> Result:
        return self._later(book, lambda: book.dispute_decide(case, won=won))

    def complete_movement(self, book: Book, movement: Movement,
                          succeed: bool | None = None) -> Result:
        return self._later(book, lambda: book.movement_complete(movement, succeed=succeed))

    def settlement(self, book: Book, day_text: str) -> Reply:
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            return Reply.json(400, {"error": "bad date"})
        with self.lock:
            text = self.dialects[book.provider].settlement_csv(book, day)
        if self.settlement_dir is not None:
            folder = self.settlement_dir / book.provider
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{day.isoformat()}.csv").write_text(text, encoding="utf-8")
        return Reply(200, text.encode(), "text/csv; charset=utf-8", {
            "Content-Disposition": f'attachment; filename="{book.provider}-{day}.csv"'})

    # -- the issuer's 3-D Secure challenge page (the cardholder's browser; no provider auth) ----
    def challenge(self, request: Request, path: str) -> Reply:
        """`GET /_challenge/<provider>/<charge>`: the page; `POST` with `action` approve, fail
        or abandon: approve and fail end the challenge (with their notice), abandon leaves it
        open to expire. Each sends the browser back to the merchant's return URL (303)."""
        provider, _, reference = path.partition("/")
        book = self.books.get(provider)
        with self.lock:
            charge = book.charge(reference) if book is not None else None
        if book is None or charge is None or not charge.challenge_url:
            return Reply(404, b"No such authentication.", "text/plain; charset=utf-8")
        if request.method == "GET":
            return Reply(200, challenge_page(provider, charge), "text/html; charset=utf-8")
        action = parse_qs(request.body.decode("utf-8", "replace")).get("action", [""])[-1]
        if action not in ("approve", "fail", "abandon"):
            return Reply(400, b"action must be approve, fail or abandon.",
                         "text/plain; charset=utf-8")
        if action != "abandon":
            done = self._later(book, lambda: book.challenge_complete(
                reference, approved=action == "approve"))
            if done.kind == "invalid_state" and charge.status == "voided":
                # The merchant voided it while the cardholder was away: no approval to show.
                return Reply(409, GONE_PAGE, "text/html; charset=utf-8")
        if not charge.return_url:
            return Reply(200, f"Authentication {action}d.".encode(), "text/plain; charset=utf-8")
        return Reply(303, b"", "text/plain; charset=utf-8", {"Location": charge.return_url})

    # -- the control API -------------------------------------------------------------------------
    def control(self, request: Request, path: str) -> Reply:
        routes: list[tuple[str, str, Callable[..., Reply]]] = [
            ("GET", r"/health", self._c_health),
            ("POST", r"/reset", self._c_reset),
            ("POST", r"/clock", self._c_clock),
            ("GET", r"/charges", self._c_charges),
            ("GET", r"/movements", self._c_movements),
            ("GET", r"/webhooks", self._c_webhooks),
            ("GET", r"/(?P<provider>\w+)/config", self._c_config),
            ("POST", r"/(?P<provider>\w+)/config", self._c_config),
            ("POST", r"/(?P<provider>\w+)/disputes", self._c_dispute),
            ("GET", r"/disputes", self._c_disputes),
            ("POST", r"/(?P<provider>\w+)/disputes/(?P<ref>[^/]+)/decide", self._c_decide),
            ("POST", r"/(?P<provider>\w+)/(?P<kind>payout|deposit)s/(?P<ref>[^/]+)/complete",
             self._c_complete),
            ("GET", r"/(?P<provider>\w+)/settlements/(?P<day>[\d-]+)\.csv",
             self._c_settlement),
        ]
        for method, pattern, function in routes:
            found = re.fullmatch(pattern, path)
            if found and method == request.method:
                params = found.groupdict()
                if "provider" in params and params["provider"] not in self.books:
                    return Reply.json(404, {"error": f"unknown provider {params['provider']}"})
                try:
                    return function(request, **params)
                except (BadRequest, ConfigError, ValueError) as exc:
                    return Reply.json(400, {"error": str(exc)})
        return Reply.json(404, {"error": f"no control endpoint {request.method} {path}"})

    def _c_health(self, request: Request) -> Reply:
        return Reply.json(200, {"status": "ok", "seed": self.seed, "providers": list(PROVIDERS)})

    def _c_reset(self, request: Request) -> Reply:
        seed = request.json().get("seed")
        self.reset(None if seed is None else str(seed))
        return Reply.json(200, {"status": "reset", "seed": self.seed})

    def _c_clock(self, request: Request) -> Reply:
        data = request.json()
        with self.lock:
            frozen = data.get("frozen_at")
            self.clock.frozen_at = datetime.fromisoformat(frozen) if frozen else None
            self.clock.offset = timedelta(seconds=float(data.get("offset_seconds", 0)))
            return Reply.json(200, {"now": self.clock.now().isoformat()})

    def _c_charges(self, request: Request) -> Reply:
        provider, order_id = request.query.get("provider"), request.query.get("order_id")
        with self.lock:
            charges = [c.snapshot() for book in self.books.values()
                       if not provider or book.provider == provider
                       for c in book.charges.values()
                       if not order_id or c.order_id == order_id]
            return Reply.json(200, {"charges": charges, "double_charged": double_charged(
                self.books)})

    def _listing(self, request: Request, name: str) -> Reply:
        """`{name: [snapshot, …]}` of every book's `name` (movements, disputes), or of the
        `provider` the query names."""
        provider = request.query.get("provider")
        with self.lock:
            return Reply.json(200, {name: [
                row.snapshot() for book in self.books.values()
                if not provider or book.provider == provider
                for row in getattr(book, name).values()]})

    def _c_movements(self, request: Request) -> Reply:
        return self._listing(request, "movements")

    def _c_webhooks(self, request: Request) -> Reply:
        return Reply.json(200, {"webhooks": self.webhooks.snapshot(
            request.query.get("provider", "")), "idle": self.scheduler.idle()})

    def _c_config(self, request: Request, provider: str) -> Reply:
        if request.method == "POST":
            return Reply.json(200, self.configure(provider, request.json()))
        with self.lock:
            return Reply.json(200, self.books[provider].config.as_dict())

    def _c_dispute(self, request: Request, provider: str) -> Reply:
        data = request.json()
        with self.lock:
            book = self.books[provider]
            result = book.dispute(str(data.get("reference", "")), data.get("amount"),
                                  str(data.get("reason", "fraudulent")))
            if result.kind != "ok":
                return Reply.json(409 if result.charge else 404, {"error": result.kind})
            self.webhooks.emit(book, result.events)
            return Reply.json(200, {"event_id": result.events[0].id,
                                    "dispute": result.events[0].dispute})

    def _c_disputes(self, request: Request) -> Reply:
        return self._listing(request, "disputes")

    def _c_decide(self, request: Request, provider: str, ref: str) -> Reply:
        """The network decides now: `{"won": true|false}`, or null to let the evidence (or the
        seeded draw) decide."""
        won = request.json().get("won")
        book = self.books[provider]
        with self.lock:
            case = book.disputes.get(ref)
        if case is None:
            return Reply.json(404, {"error": f"no dispute {ref}"})
        result = self.decide_dispute(book, case, won=None if won is None else bool(won))
        if result.kind != "ok":
            return Reply.json(409, {"error": result.kind, "status": case.status})
        return Reply.json(200, case.snapshot())

    def _c_complete(self, request: Request, provider: str, kind: str, ref: str) -> Reply:
        succeed = request.json().get("succeed", True)
        book = self.books[provider]
        movement = book.movement(kind, ref)
        if movement is None:
            return Reply.json(404, {"error": f"no {kind} {ref}"})
        result = self.complete_movement(book, movement, succeed=bool(succeed))
        if result.kind != "ok":
            return Reply.json(409, {"error": result.kind})
        return Reply.json(200, movement.snapshot())

    def _c_settlement(self, request: Request, provider: str, day: str) -> Reply:
        return self.settlement(self.books[provider], day)


GONE_PAGE = b"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>3-D Secure authentication</title></head><body>
<p id="gone">This payment was canceled by the merchant and can no longer be completed. Nothing
was charged.</p></body></html>"""


def challenge_page(provider: str, charge: Charge) -> bytes:
    """A plain HTML form (no script): what the issuer shows the cardholder; once the merchant
    voided the payment, only a notice that it can no longer be completed."""
    if charge.status == "voided":
        return GONE_PAGE
    amount = html.escape(f"{charge.amount} {charge.currency.upper()} (minor units)")
    state = html.escape(charge.status)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>3-D Secure authentication</title></head><body>
<h1>{html.escape(provider.title())} test issuer: 3-D Secure</h1>
<p>Payment of <strong>{amount}</strong> for order <code>{html.escape(charge.order_id)}</code>
(<span id="state">{state}</span>).</p>
<form method="post"><button type="submit" name="action" value="approve" id="approve">Complete
authentication</button> <button type="submit" name="action" value="fail" id="fail">Fail
authentication</button> <button type="submit" name="action" value="abandon" id="abandon">
Abandon</button></form></body></html>""".encode()


# -- HTTP plumbing ---------------------------------------------------------------------------
class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler sleeping out a "timeout" must not delay shutdown
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, SimulatorRequestHandler)


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    server: SimulatorHTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: no stale keep-alive sockets
    server_version = "ClearhouseProviderSimulator/1.0"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._write(Reply.json(413, {"error": "body too large"}))
            return
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command, path=split.path, raw_path=self.path,
            query={k: v[-1] for k, v in parse_qs(split.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()}, body=body,
        )
        try:
            reply = self.server.simulator.handle(request)
        except Exception:
            logger.exception("simulator failed on %s %s", self.command, self.path)
            reply = Reply.json(500, {"error": "simulator bug"})
        if reply is DROP:
            self._reset_connection()
        else:
            self._write(reply)

    def _write(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (read timeout): the answer has nowhere to go
            self.close_connection = True

    def _reset_connection(self) -> None:
        """Close with RST, so the client sees "connection reset" after its request was sent."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.client_address[0], *args)


def start_simulator(port: int = 0, *, host: str = "127.0.0.1", seed: str = "0",
                    settlement_dir: Path | None = None, state_file: Path | None = None
                    ) -> tuple[SimulatorHTTPServer, str]:
    """Start a simulator in background threads; `port=0` picks a free ephemeral port. With a
    `state_file` its books outlive a restart."""
    simulator = Simulator(seed=seed, settlement_dir=settlement_dir, state_file=state_file)
    server = SimulatorHTTPServer((host, port), simulator)
    simulator.scheduler.start()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     name="simulator-http", daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}"


def stop_simulator(server: SimulatorHTTPServer) -> None:
    server.simulator.stop_event.set()
    server.shutdown()
    server.server_close()
    server.simulator.scheduler.stop()
