"""Optional tracing and Sentry (config/observability.py): off unless configured; Sentry events
leave scrubbed like the logs. The cross-process trace (web → Celery task → provider HTTP call)
is checked by `make smoke-production` (tests/test_smoke_production.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PROGRAM = """
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
django.setup()
from config import observability
observability.setup("test")
import sentry_sdk
print("active" if sentry_sdk.get_client().is_active() else "inactive", flush=True)
try:
    raise ValueError("card 4242424242424242 declined, api key sk_live_abcdef123456")
except ValueError:
    sentry_sdk.capture_exception()
sentry_sdk.flush(timeout=10)
"""


class _Sentry:
    """A Sentry ingestion endpoint on 127.0.0.1 that keeps every envelope posted to it."""

    def __init__(self) -> None:
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.append(body.decode(errors="replace"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.dsn = f"http://public@127.0.0.1:{self.server.server_address[1]}/1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SENTRY_", "OTEL_"))}
    return subprocess.run([sys.executable, "-c", _PROGRAM], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, check=False, timeout=120)


def test_sentry_is_off_without_a_dsn_and_sends_scrubbed_events_with_one():
    sentry = _Sentry()
    try:
        off = _run({})
        assert off.returncode == 0, off.stderr[-2000:]
        assert off.stdout.startswith("inactive") and sentry.bodies == []
        on = _run({"SENTRY_DSN": sentry.dsn})
        assert on.returncode == 0, on.stderr[-2000:]
        assert on.stdout.startswith("active")
    finally:
        sentry.stop()
    events = [json.loads(line) for body in sentry.bodies for line in body.splitlines()
              if line.startswith("{") and '"exception"' in line]
    assert len(events) == 1, sentry.bodies
    text = json.dumps(events[0])
    assert "ValueError" in text
    assert "4242424242424242" not in text and "sk_live_abcdef123456" not in text
    assert events[0]["server_name"] == "test"


def test_tracing_configured_without_its_packages_stops_start_up_saying_which():
    program = ("import builtins; real = builtins.__import__\n"
               "def fake(name, *a, **k):\n"
               "    if name.startswith('opentelemetry'): raise ImportError(name)\n"
               "    return real(name, *a, **k)\n"
               "builtins.__import__ = fake\n"
               "from config import observability; observability.setup('web')\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                            text=True, check=False, timeout=60,
                            env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                 "DJANGO_SETTINGS_MODULE": "config.settings.test"})
    assert result.returncode != 0
    assert "install the `observability` group" in result.stderr


def _sample(metric, name: str, **labels: str) -> float:
    return sum(s.value for family in metric.collect() for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_requests_statements_and_tasks_are_counted_by_pattern_and_kind(client, db, settings):
    from core import metrics

    route = "api/v1/payments/<str:payment_id>"
    before = _sample(metrics.HTTP_REQUESTS, "clearhouse_http_requests_total",
                     route=route, status="401")
    selects = _sample(metrics.DB_QUERY_DURATION, "clearhouse_db_query_duration_seconds_count",
                      statement="select")
    assert client.get("/api/v1/payments/pay_123").status_code == 401
    assert _sample(metrics.HTTP_REQUESTS, "clearhouse_http_requests_total", route=route,
                   status="401", method="GET") == before + 1  # the pattern, never the id
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert _sample(metrics.DB_QUERY_DURATION, "clearhouse_db_query_duration_seconds_count",
                   statement="select") > selects
    client.get(f"/{settings.ADMIN_URL}login/")  # the admin's address stays out of the labels
    assert _sample(metrics.HTTP_REQUESTS, "clearhouse_http_requests_total",
                   route="<admin>/login/") >= 1

    class Task:
        name = "payments.tasks.payment_authorize"

    done = _sample(metrics.TASKS, "clearhouse_celery_tasks_total", task=Task.name,
                   state="success")
    metrics.task_started(task_id="t-1")
    metrics.task_finished(task_id="t-1", task=Task(), state="SUCCESS")
    assert _sample(metrics.TASKS, "clearhouse_celery_tasks_total", task=Task.name,
                   state="success") == done + 1
