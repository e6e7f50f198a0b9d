"""`make run` end to end: tools/run.py starts web, worker, beat and the simulator; the printed
demo key creates and confirms a payment that ends captured; beat runs the janitor on the
interval from the environment and a JobRun appears; Ctrl-C stops every process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from reconciliation.models import JobRun
from tests.celery_workers import broker

__all__ = ["broker"]  # the fixture, used by name

ROOT = Path(__file__).resolve().parent.parent
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _call(url: str, key: str = "", body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.25)  # polling another process, bounded by the deadline
    raise AssertionError(f"timed out waiting for {what}")


def _environment(tmp_path: Path, port: int) -> dict[str, str]:
    """make run as a newcomer runs it (no broker configured: the embedded one), with every
    folder it keeps state in under tmp_path, on the test database."""
    env = {**os.environ, "DATABASE_URL": _database_url(), "PORT": str(port),
           "HOST": "127.0.0.1", "SIMULATOR_PORT": str(_free_port()),
           "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "CELERY_BROKER_DIR": str(tmp_path / "broker"), "LOG_LEVEL": "WARNING",
           "EMBEDDED_BROKER_DIR": str(tmp_path / "valkey"),
           "SIMULATOR_STATE_FILE": str(tmp_path / "simulator" / "books.pickle"),
           "RECON_JANITOR_INTERVAL_SECONDS": "2"}
    for name in ("CELERY_BROKER_URL", "REDIS_URL"):
        env.pop(name, None)
    return env


class _Stack:
    """tools/run.py in its own session, its output kept; `stop()` sends Ctrl-C."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "tools/run.py"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.output: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.output.extend(iter(self.proc.stdout.readline, "")),
            daemon=True)
        self.reader.start()

    def key(self, base: str) -> str:
        def printed_key():
            if self.proc.poll() is not None:
                raise AssertionError("tools/run.py exited:\n" + "".join(self.output)[-3000:])
            return next((m.group(1) for line in list(self.output)
                         if (m := re.search(r"API key\s+(sk_test_\S+)", line))), None)

        key = _until(printed_key, 90, "the demo API key to be printed")
        _until(lambda: _OPENER.open(f"{base}/healthz", timeout=2).status == 200, 60, "web")
        return key

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self.reader.join(timeout=5)
        return code


def _captured(base: str, key: str, payment_id: str) -> dict | None:
    _, body = _call(f"{base}/api/v1/payments/{payment_id}", key)
    return body if body.get("status") == "captured" else None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_after_a_restart_payments_through_the_simulated_acquirers_are_still_captured(tmp_path):
    """Issue 21: a restarted make run (same database, same simulator books) captured 3 of 4 BRL
    payments no more: the simulator handed out provider references it had already used."""
    port = _free_port()
    env = _environment(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    for run in range(2):
        stack = _Stack(env)
        try:
            key = stack.key(base)
            ids = []
            for index in range(4):
                status, payment = _call(f"{base}/api/v1/payments", key, {
                    "amount": 1000 + index, "currency": "brl", "payment_method": "pm_card_visa",
                    "confirm": True})
                assert status == 202, payment
                ids.append(payment["id"])
            for payment_id in ids:
                _until(lambda pid=payment_id, k=key: _captured(base, k, pid), 60,
                       f"run {run + 1}: {payment_id} captured")
            if run == 0:
                _a_burst_of_reads_holds_no_connection_per_request(base, key, ids)
        finally:
            code = stack.stop()
        assert code == 0, "".join(stack.output)[-3000:]
    from reconciliation.models import ReconciliationBreak

    assert not ReconciliationBreak.objects.filter(type="reference_collision").exists()


def _a_burst_of_reads_holds_no_connection_per_request(base: str, key: str, ids: list[str]
                                                      ) -> None:
    """300 reads from 16 clients at once all answer 200, and the database is not left holding
    a connection per request. The development server runs each request in a thread of its
    own: with persistent connections (DB_CONN_MAX_AGE) every thread left one open until the
    garbage collector came, and a burst of polling answered 500 'too many clients already'."""
    from concurrent.futures import ThreadPoolExecutor

    def read(index: int) -> int:
        return _call(f"{base}/api/v1/payments/{ids[index % len(ids)]}", key)[0]

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(read, range(300)))
    assert statuses.count(200) == 300, sorted(set(statuses))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        held = cursor.fetchone()[0]
    # Measured: 2 held after the burst with the fix, 61 before it (up to 200 by hand).
    assert held < 20, f"{held} connections to the database after a burst of 300 reads"


def _serves_docs_and_captures_a_payment(stack: _Stack, port: int) -> None:
    """The printed key captures a payment through the worker and beat sends the janitor; the
    stack stops cleanly on Ctrl-C."""
    proc, output = stack.proc, stack.output
    base = f"http://127.0.0.1:{port}"
    try:
        key = stack.key(base)
        with _OPENER.open(f"{base}/api/docs/", timeout=10) as docs:
            assert docs.status == 200
        status, payment = _call(f"{base}/api/v1/payments", key, {
            "amount": 1050, "currency": "usd", "payment_method": "pm_card_visa",
            "confirm": True})
        assert status == 202, payment
        final = _until(lambda: (lambda s, p: p if p.get("status") == "captured" else None)(
            *_call(f"{base}/api/v1/payments/{payment['id']}", key)), 60, "the capture")
        assert final["amount_captured"] == 1050
        # Beat (DatabaseScheduler, rows reset from RECON_* by run.py) sends the janitor every
        # 2 s; the worker records each run.
        run = _until(lambda: JobRun.objects.filter(job="recon_janitor",
                                                   finished_at__isnull=False).first(),
                     60, "beat to run the janitor and a JobRun to appear")
        assert run.error == "", run.error
    finally:
        code = stack.stop()
    assert proc.returncode == code == 0, "".join(output)[-3000:]
    leftovers = subprocess.run(["pgrep", "-f", f"runserver --noreload 127.0.0.1:{port}"],
                               capture_output=True, text=True, check=False).stdout
    assert leftovers.strip() == "", "web server still running after Ctrl-C"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", ["amqp"], indirect=True)
def test_make_run_on_rabbitmq_captures_a_payment_and_prints_no_password(tmp_path, broker):
    port = _free_port()
    stack = _Stack({**_environment(tmp_path, port), "CELERY_BROKER_URL": broker.url})
    _serves_docs_and_captures_a_payment(stack, port)
    printed = next(line for line in stack.output if line.strip().startswith("Broker"))
    assert "amqp://guest:**@127.0.0.1:5672/" in printed, printed


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_make_run_serves_docs_and_the_printed_key_captures_a_payment(tmp_path):
    port = _free_port()
    _serves_docs_and_captures_a_payment(_Stack(_environment(tmp_path, port)), port)
