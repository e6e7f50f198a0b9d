"""A real worker killed with SIGKILL in the middle of a janitor task: the broker (Redis, with a
short visibility timeout) hands the unacknowledged task to a second worker, which takes the
dead run's claim back (same task id) and still ends with exactly one capture."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from kombu import Connection

from ledger.models import JournalEntry
from payments import services
from payments.models import Payment
from reconciliation import services as recon_services
from reconciliation.models import JobRun, ReconciliationCheck
from reconciliation.tasks import recon_janitor
from tests.conftest import routing_rule
from webhooks.models import Event

ROOT = Path(settings.BASE_DIR)
REDIS = next((Path(p) / "redis-server" for p in os.environ.get("PATH", "").split(os.pathsep)
              if (Path(p) / "redis-server").exists()), None)
# The worker's broker options: an unacknowledged message becomes visible again after 10 s (long
# enough that the live first worker is killed before then), and a worker looks for such
# messages every second (the defaults are an hour and 100 s).
WORKER = (
    "from config.celery_app import app; "
    "app.conf.broker_transport_options = {'visibility_timeout': 10, "
    "'unacked_restore_interval': 1, 'unacked_restore_throttle': 1}; "
    "app.worker_main(['worker', '--pool', 'solo', '-l', 'WARNING', '-n', '{name}@localhost', "
    "'--without-heartbeat', '--without-mingle', '--without-gossip'])"
)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen([str(REDIS), "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)  # waiting for the server we just started to listen, bounded
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait(timeout=10)


def _database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER'] or 'postgres'}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _wait_for(condition, timeout: float, what: str,
              workers: dict[int, subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if any(proc.poll() is not None for proc in workers.values()):
            break
        time.sleep(0.1)  # polling the database for the workers' effect, bounded
    output = ""
    for proc in workers.values():
        proc.kill()
        output += proc.communicate(timeout=10)[0][-3000:]
    pytest.fail(f"timed out waiting for {what}; workers said:\n{output}")


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_janitor_task_is_replaced_and_the_payment_captured_once(
    simulator, merchant, redis_url
):
    routing_rule("cielo")
    payment = services.payment_create(merchant=merchant, amount=4200, currency="brl",
                                      payment_method="pm_card_drop")
    services.payment_confirm(merchant=merchant, payment_id=payment.id)
    services.payment_authorization_execute(attempt_id=payment.attempts.get().id)
    assert Payment.objects.get(pk=payment.pk).status == "authorization_requested"
    # Tracked and due now (the worker's clock cannot be moved 5 minutes ahead).
    recon_services.checks_discover(first_check_at=lambda since, status: since,
                                   now=timezone.now(), grace=timedelta(0))
    simulator.control.configure("cielo", latency_ms=8000)  # the lookup blocks the worker

    task_id = f"janitor-{os.getpid()}-{time.monotonic_ns()}"
    with Connection(redis_url) as conn:
        recon_janitor.apply_async(task_id=task_id, connection=conn)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": redis_url,
           "REDIS_URL": "", "SIMULATOR_URL": simulator.base_url, "LOG_FORMAT": "console"}

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", WORKER.replace("{name}", name)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    check = ReconciliationCheck.objects.get(object_id=payment.id)
    # Two workers, as in production: whichever takes the task is killed, the other inherits.
    workers = {proc.pid: proc for proc in (start(f"w{n}-{os.getpid()}") for n in (1, 2))}
    try:
        _wait_for(lambda: ReconciliationCheck.objects.filter(
            pk=check.pk, lease_owner=f"task-{task_id}").exists(), 120, "the first claim",
            workers)
        running = (JobRun.objects.filter(job="recon_janitor", finished_at__isnull=True)
                   .order_by("started_at").first())
        doomed = workers.pop(int(running.host.rsplit(":", 1)[1]))
        time.sleep(0.3)  # inside the 8 s lookup: the worker is blocked on the provider
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.communicate(timeout=10)
        assert Payment.objects.get(pk=payment.pk).status == "authorization_requested"
        simulator.control.configure("cielo", latency_ms=0)
        _wait_for(lambda: Payment.objects.get(pk=payment.pk).status == "captured", 60,
                  "the redelivered janitor task", workers)
        _wait_for(lambda: JobRun.objects.filter(job="recon_janitor", finished_at__isnull=False)
                  .exists(), 10, "the second run's JobRun", workers)
    finally:
        for proc in workers.values():
            proc.terminate()
            proc.communicate(timeout=30)

    runs = list(JobRun.objects.filter(job="recon_janitor").order_by("started_at"))
    assert [run.finished_at is None for run in runs] == [True, False]  # the killed one
    assert (runs[1].examined, runs[1].fixed) == (1, 1)
    assert JournalEntry.objects.filter(reference_type="payment", reference_id=payment.id,
                                       kind="capture").count() == 1
    assert Event.objects.filter(object_id=payment.id, type="payment.captured").count() == 1
    assert ReconciliationCheck.objects.get(pk=check.pk).checks == 1
    assert len(simulator.control.charges(order_id=payment.id)) == 1
