"""`make smoke-production`: the production topology, from an env file, on this machine's
PostgreSQL and Redis, checked end to end and stopped.

What docker-compose.yml runs, run here without Docker: the image's build step (static files),
the release step (migrate, an empty metrics directory), the first-run `bootstrap`, then gunicorn
with several workers, a Celery worker, beat and the simulator, every one with the same
PROMETHEUS_MULTIPROC_DIR. Production posture is kept: the TLS redirect is on and the only
allowed host is pay.example.com, so every request below comes "through the proxy" (Host,
X-Forwarded-Proto, X-Forwarded-For) except the orchestrator's probe of /readyz.

Checks: the probe answers, real traffic is still redirected and host-checked, a payment is
captured through the worker and the simulator, the back-office's static files are served,
and /metrics shows the worker's authorization counter and HTTP counters summed across at least
two gunicorn workers (each worker's own file read as well). Prints the figures; exits 0 only if
all hold. Every process it started is stopped, whatever happened.

  python tools/smoke_production.py [--env-file deploy/demo.env] [--database-url URL]
                                   [--redis-url URL] [--work-dir DIR] [--keep-database]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PUBLIC_HOST = "pay.example.com"
# What a TLS-terminating proxy adds to every request it forwards.
PROXIED = {"Host": PUBLIC_HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class SmokeFailure(AssertionError):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def http(base: str, path: str, *, headers: dict[str, str] | None = None,
         body: dict | None = None, opener: urllib.request.OpenerDirector = _OPENER,
         ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(  # noqa: S310 (base is http://127.0.0.1:<port>)
        base + path, data=json.dumps(body).encode() if body is not None else None,
        headers={**(headers or {}), **({"Content-Type": "application/json"} if body else {})})
    try:
        with opener.open(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def until(condition: Callable[[], Any], timeout: float, what: str,
          alive: Callable[[], None] = lambda: None) -> Any:
    """Poll `condition` (an OSError counts as not yet) while `alive` raises for a process
    that died, until it returns something true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        with contextlib.suppress(OSError):
            if value := condition():
                return value
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)  # polling the processes we started, bounded by the deadline


class TraceCollector:
    """An OTLP/HTTP receiver on 127.0.0.1: every span the processes export, by trace."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list[dict[str, str]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    service = next((a.value.string_value for a in resource.resource.attributes
                                    if a.key == "service.name"), "")
                    for scope in resource.scope_spans:
                        collector.spans.extend(
                            {"trace": span.trace_id.hex(), "service": service,
                             "name": span.name, "kind": str(span.kind)}
                            for span in scope.spans)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace_of(self, service: str, name: str) -> list[dict[str, str]]:
        """Every span of the first trace that has a `service` span called `name`."""
        first = next((s["trace"] for s in list(self.spans)
                      if s["service"] == service and s["name"] == name), None)
        return [s for s in list(self.spans) if s["trace"] == first] if first else []

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def tracing_available() -> bool:
    try:
        import opentelemetry.proto.collector.trace.v1.trace_service_pb2
        import opentelemetry.sdk
    except ImportError:
        return False
    return bool(opentelemetry.sdk and opentelemetry.proto)


def recreate_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    check(re.fullmatch(r"[a-z0-9_]+", name), f"database name {name!r}: letters, digits, _")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


class Topology:
    """The long-running processes, each in its own session, output to a log file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self.procs[name]

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SmokeFailure(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]

    def children(self, name: str) -> set[int]:
        """The pids of a process's children (gunicorn's workers, Celery's pool)."""
        found = subprocess.run(["pgrep", "-P", str(self.procs[name].pid)], capture_output=True,
                               text=True, check=False).stdout.split()
        return {int(pid) for pid in found}

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to each main process (gunicorn and Celery shut down warmly), then SIGKILL
        to any process group still there after 30 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline, codes = time.monotonic() + 30, {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of that session only
        return codes


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    check(result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def per_process_counts(directory: Path, metric: str, match: dict[str, str]) -> dict[str, float]:
    """`metric`'s total in each process's own file (prometheus_client's reader, file by
    file): the proof that /metrics sums several processes and not one."""
    from prometheus_client import multiprocess

    totals: dict[str, float] = {}
    for path in sorted(directory.glob("counter_*.db")):
        for family in multiprocess.MultiProcessCollector._read_metrics([str(path)]).values():
            for sample in family.samples:
                if sample.name == metric and all(dict(sample.labels).get(k) == v
                                                  for k, v in match.items()):
                    owner = path.stem.removeprefix("counter_")
                    totals[owner] = totals.get(owner, 0.0) + sample.value
    return totals


def scraped(text: str, metric: str, match: dict[str, str]) -> float:
    """The sum over /metrics' samples of `metric` whose labels include `match`."""
    total = 0.0
    for line in text.splitlines():
        found = re.fullmatch(rf"{re.escape(metric)}\{{(.*)\}} (\S+)", line)
        if found:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(1)))
            if all(labels.get(k) == v for k, v in match.items()):
                total += float(found.group(2))
    return total


def environment(args: argparse.Namespace, work: Path, ports: dict[str, int]) -> dict[str, str]:
    """The env file, with this machine's services and ports laid over it, and production's
    posture restored where the demo file relaxes it (TLS redirect, one public host)."""
    from_file = read_env_file(args.env_file)
    simulator = f"http://127.0.0.1:{ports['simulator']}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PROVIDERS_",
                                                                      "CIELO_", "REDE_",
                                                                      "GETNET_", "SIMULATOR_"))},
           **from_file,
           "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url,
           "CELERY_BROKER_URL": args.broker_url or args.redis_url,
           "DJANGO_ALLOWED_HOSTS": PUBLIC_HOST, "DJANGO_SECURE_SSL_REDIRECT": "true",
           "DJANGO_STATIC_ROOT": str(work / "static"),
           "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
           "LEDGER_CHECKPOINT_DIR": str(work / "ledger-checkpoints"),
           "EVIDENCE_STORAGE_DIR": str(work / "evidence"),
           "GUNICORN_BIND": f"127.0.0.1:{ports['web']}", "GUNICORN_WORKERS": str(args.workers),
           "SIMULATOR_URL": simulator, "SIMULATOR_PORT": str(ports["simulator"]),
           # Notices to a host that only answers pay.example.com over https would be refused:
           # the simulator sends none here; payments are captured by the worker's calls.
           "SIMULATOR_WEBHOOK_BASE_URL": "",
           "LOG_FORMAT": "console", "LOG_LEVEL": "WARNING",
           # deploy/build.sh runs `python`, the image's: here, this interpreter's.
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name, value in from_file.items():
        if name.endswith("_BASE_URL") and "simulator:8100" in value:
            env[name] = value.replace("http://simulator:8100", simulator)
    return env


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="clearhouse-smoke-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    ports = {"web": free_port(), "simulator": free_port()}
    env = environment(args, work, ports)
    base = f"http://127.0.0.1:{ports['web']}"
    figures: dict[str, Any] = {"work_dir": str(work), "gunicorn_workers": args.workers,
                               "broker": urlsplit(env["CELERY_BROKER_URL"]).scheme}
    started = time.monotonic()

    # Build and release steps, as the image and the compose file's migrate service run them.
    build = subprocess.run(["sh", "deploy/build.sh", "application"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=False)
    check(build.returncode == 0, f"the image's build step failed:\n{build.stderr[-3000:]}")
    recreate_database(args.database_url)
    manage(env, "migrate", "--no-input", "-v", "0")
    subprocess.run([PY, "-m", "tools.metrics_dir", "--reset"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    boot = json.loads(manage(env, "bootstrap", "--merchant", "Smoke Test Ltd",
                             "--admin", "ops@example.com"))
    check(boot["totp_url"].startswith("otpauth://totp/"), f"no TOTP device: {boot}")
    key = boot["merchant"]["api_key"]
    figures["setup_seconds"] = round(time.monotonic() - started, 1)

    traces = TraceCollector() if tracing_available() else None
    if traces is not None:  # config/observability.py: off unless this is set
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": traces.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    topology = Topology(env, work / "logs")
    try:
        topology.start("web", [PY, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"])
        topology.start("worker", [PY, "-m", "celery", "-A", "config", "worker", "-l", "WARNING",
                                  "-Q", "providers,inbound,webhooks,reconciliation",
                                  "--concurrency", "2", "-n", "smoke@%h"])
        topology.start("beat", [PY, "-m", "celery", "-A", "config", "beat", "-l", "WARNING",
                                "--schedule", str(work / "beat-schedule")])
        topology.start("simulator", [PY, "-m", "providers.simulator", "--port",
                                     str(ports["simulator"]), "--state-file",
                                     str(work / "simulator.pickle")])
        figures.update(checks(base, key, env, topology, work))
        figures["trace"] = trace_check(traces, topology) if traces else "opentelemetry not " \
            "installed: the trace check did not run (uv sync --group observability)"
    finally:
        figures["stopped"] = topology.stop()
        if traces is not None:
            traces.stop()
    check(all(code == 0 or code == -signal.SIGTERM for code in figures["stopped"].values()),
          f"a process did not stop cleanly: {figures['stopped']}")
    figures["total_seconds"] = round(time.monotonic() - started, 1)
    if not args.keep_database:
        drop_database(args.database_url)
    return figures


def checks(base: str, key: str, env: dict[str, str], topology: Topology, work: Path
           ) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    api = {**PROXIED, "Authorization": f"Bearer {key}"}
    # 1. The orchestrator's probe: plain http, Host 127.0.0.1, from loopback.
    until(lambda: http(base, "/readyz")[0] == 200, 90, "/readyz to answer the probe 200",
          topology.alive)
    status, _, body = http(base, "/readyz")
    check(json.loads(body)["status"] == "ok", body)
    # 2. Real traffic keeps production's checks: plain http is redirected to https, an unknown
    #    host through the proxy is refused, the probe paths through the proxy are host-checked.
    status, headers, _ = http(base, "/api/v1/payments", headers={"Host": PUBLIC_HOST},
                              opener=_NO_REDIRECT)
    check(status == 301 and headers.get("Location", "").startswith("https://"),
          f"plain http was not redirected: {status} {headers}")
    status, _, _ = http(base, "/readyz", headers={**PROXIED, "Host": "127.0.0.1"})
    check(status == 400, f"/readyz through the proxy with a foreign Host answered {status}")
    # 3. A payment, confirmed: the worker calls the (simulated) acquirer and captures it.
    status, _, body = http(base, "/api/v1/payments", headers={
        **api, "Idempotency-Key": "smoke-1"}, body={
        "amount": 1990, "currency": "brl", "payment_method": "pm_card_visa", "confirm": True})
    check(status == 202, f"POST /payments answered {status}: {body[:500]!r}")
    payment = json.loads(body)
    started, reads = time.monotonic(), 0

    def captured() -> dict | None:
        nonlocal reads
        reads += 1
        code, _, answer = http(base, f"/api/v1/payments/{payment['id']}", headers=api)
        found = json.loads(answer) if code == 200 else {}
        return found if found.get("status") == "captured" else None

    final = until(captured, 90, f"payment {payment['id']} to be captured", topology.alive)
    check(final["amount_captured"] == 1990, final)
    figures["payment"] = {"id": payment["id"], "provider": final.get("provider"),
                          "seconds_to_captured": round(time.monotonic() - started, 2)}
    # 4. Static files: the admin login page's stylesheet, served by gunicorn (WhiteNoise).
    status, _, page = http(base, "/" + env.get("DJANGO_ADMIN_URL", "admin/").strip("/") +
                           "/login/", headers=PROXIED)
    check(status == 200, f"admin login page answered {status}")
    sheet = re.search(rb'href="(/static/[^"]+\.css)"', page)
    check(sheet, "no stylesheet on the admin login page")
    status, headers, css = http(base, sheet.group(1).decode(), headers=PROXIED)
    check(status == 200 and headers.get("Content-Type", "").startswith("text/css") and css,
          f"static file {sheet.group(1)!r} answered {status}")
    check("immutable" in headers.get("Cache-Control", ""), headers)
    figures["static"] = {"path": sheet.group(1).decode(), "bytes": len(css)}
    # 5. HTTP counters across gunicorn workers: concurrent requests on fresh connections until
    #    at least two workers have served some (bounded), every request counted.
    route = "api/v1/payments/<str:payment_id>"
    workers = topology.children("web")
    check(len(workers) >= 2, f"gunicorn has {len(workers)} workers")
    sent = reads

    def spread() -> bool:
        nonlocal sent
        threads = [threading.Thread(target=lambda: http(
            base, f"/api/v1/payments/{payment['id']}", headers=api)) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent += len(threads)
        counts = per_process_counts(work / "metrics", "clearhouse_http_requests_total",
                                    {"route": route, "method": "GET"})
        return sum(1 for count in counts.values() if count) >= 2

    until(spread, 60, "two gunicorn workers to serve requests", topology.alive)
    status, _, text = http(base, "/metrics", headers={
        **PROXIED, "Authorization": f"Bearer {env['METRICS_TOKEN']}"})
    check(status == 200, f"/metrics answered {status}")
    metrics = text.decode()
    counts = per_process_counts(work / "metrics", "clearhouse_http_requests_total",
                                {"route": route, "method": "GET"})
    total = scraped(metrics, "clearhouse_http_requests_total", {"route": route, "method": "GET"})
    check(total == sent == sum(counts.values()),
          f"/metrics counts {total} GETs of {route}, we sent {sent}, files hold {counts}")
    figures["http_requests"] = {"sent": sent, "scraped": total, "per_process": counts}
    # 6. The worker's counters: the authorization was made in a Celery process, not in web.
    match = {"operation": "authorize", "outcome": "approved"}
    authorizations = scraped(metrics, "clearhouse_provider_calls_total", match)
    by_process = per_process_counts(work / "metrics", "clearhouse_provider_calls_total", match)
    web_pids = {str(pid) for pid in workers}
    check(authorizations >= 1, "no authorization counted in /metrics:\n" + metrics[:2000])
    check(not any(owner.rsplit("-", 1)[-1] in web_pids for owner in by_process),
          f"the authorization was counted by a web process: {by_process}")
    tasks = scraped(metrics, "clearhouse_celery_tasks_total", {"state": "success"})
    check(tasks >= 1, "no Celery task counted")
    check("clearhouse_db_query_duration_seconds_bucket" in metrics, "no database timings")
    figures["worker_metrics"] = {"authorizations": authorizations, "by_process": by_process,
                                 "celery_tasks_succeeded": tasks}
    return figures


def trace_check(traces: TraceCollector, topology: Topology) -> dict[str, Any]:
    """One trace from the API request through the Celery task to the provider's HTTP call."""
    wanted = {("clearhouse-web", "2"), ("clearhouse-worker", "1"), ("clearhouse-worker", "3")}

    def whole() -> list[dict[str, str]] | None:  # kinds: 1 internal, 2 server, 3 client, …
        spans = traces.trace_of("clearhouse-web", "POST api/v1/payments")
        seen = {(s["service"], s["kind"]) for s in spans} | {
            (s["service"], "1") for s in spans if s["name"].startswith("run/")}
        return spans if wanted <= seen else None

    spans = until(whole, 30, "one trace from web through the worker to the provider call",
                  topology.alive)
    names = sorted({f"{s['service']}: {s['name']}" for s in spans})
    check(any("run/payments.tasks.payment_authorize" in name for name in names), names)
    return {"trace_id": spans[0]["trace"], "spans": names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/smoke_production.py")
    parser.add_argument("--env-file", type=Path, default=ROOT / "deploy" / "demo.env")
    parser.add_argument("--database-url", default=os.environ.get(
        "SMOKE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/clearhouse_smoke"))
    parser.add_argument("--redis-url", default=os.environ.get(
        "SMOKE_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--broker-url", default=os.environ.get(
        "SMOKE_BROKER_URL", os.environ.get("CELERY_BROKER_URL", "")),
                        help="the Celery broker (default: SMOKE_BROKER_URL, CELERY_BROKER_URL, "
                             "else --redis-url); amqp:// works too")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    parser.add_argument("--work-dir", default="")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args(argv)
    try:
        figures = run(args)
    except SmokeFailure as failure:
        print(f"smoke-production FAILED: {failure}", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=2))
    print("smoke-production passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
