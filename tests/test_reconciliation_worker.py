"""A real worker killed with SIGKILL in the middle of a janitor task: the broker (Redis, with a
short visibility timeout, or RabbitMQ, as soon as the dead worker's connection closes) hands the
unacknowledged task to a second worker, which takes the dead run's claim back (same task id) and
still ends with exactly one capture."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from ledger.models import JournalEntry
from payments.models import Payment
from reconciliation import services as recon_services
from reconciliation.models import JobRun, ReconciliationCheck
from reconciliation.tasks import recon_janitor
from tests.celery_workers import broker, enqueue, start_worker, stop_workers, wait_for
from tests.conftest import routing_rule
from tests.factories import pay
from webhooks.models import Event

pytestmark = [pytest.mark.slow]
__all__ = ["broker"]  # the fixture, used by name


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_janitor_task_is_replaced_and_the_payment_captured_once(
    simulator, merchant, broker
):
    routing_rule("cielo")
    payment = pay(merchant, amount=4200, card="pm_card_drop")
    assert Payment.objects.get(pk=payment.pk).status == "authorization_requested"
    # Tracked and due now (the worker's clock cannot be moved 5 minutes ahead).
    recon_services.checks_discover(first_check_at=lambda since, status: since,
                                   now=timezone.now(), grace=timedelta(0),
                                   movements_unchanged_for=timedelta(minutes=5))
    simulator.control.configure("cielo", latency_ms=8000)  # the lookup blocks the worker

    task_id = f"janitor-{os.getpid()}-{time.monotonic_ns()}"
    enqueue(recon_janitor, broker, task_id=task_id)

    def start(name: str):
        return start_worker(name, broker=broker, simulator_url=simulator.base_url)

    check = ReconciliationCheck.objects.get(object_id=payment.id)
    # Two workers, as in production: whichever takes the task is killed, the other inherits.
    workers = {proc.pid: proc for proc in (start(f"w{n}-{os.getpid()}") for n in (1, 2))}
    try:
        wait_for(lambda: ReconciliationCheck.objects.filter(
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
        wait_for(lambda: Payment.objects.get(pk=payment.pk).status == "captured", 60,
                  "the redelivered janitor task", workers)
        wait_for(lambda: JobRun.objects.filter(job="recon_janitor", finished_at__isnull=False)
                  .exists(), 10, "the second run's JobRun", workers)
    finally:
        stop_workers(workers)

    runs = list(JobRun.objects.filter(job="recon_janitor").order_by("started_at"))
    assert [run.finished_at is None for run in runs] == [True, False]  # the killed one
    assert (runs[1].examined, runs[1].fixed) == (1, 1)
    assert JournalEntry.objects.filter(reference_type="payment", reference_id=payment.id,
                                       kind="capture").count() == 1
    assert Event.objects.filter(object_id=payment.id, type="payment.captured").count() == 1
    assert ReconciliationCheck.objects.get(pk=check.pk).checks == 1
    assert len(simulator.control.charges(order_id=payment.id)) == 1
