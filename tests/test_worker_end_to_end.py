"""The worker path end to end: a real `celery worker` process takes the authorization task from a
real broker (kombu's filesystem transport, no server needed) and captures the payment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from kombu import Connection

from payments.models import Payment
from payments.tasks import payment_authorize

ROOT = Path(settings.BASE_DIR)


def _database_url() -> str:
    db = connection.settings_dict
    user = db["USER"] or "postgres"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{user}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_process_captures_a_confirmed_payment(api, tmp_path):
    broker_dir = tmp_path / "broker"
    options = {"data_folder_in": str(broker_dir / "queue"),
               "data_folder_out": str(broker_dir / "queue"),
               "processed_folder": str(broker_dir / "processed"),
               "control_folder": str(broker_dir / "control"), "store_processed": False}
    for folder in ("queue", "processed", "control"):
        (broker_dir / folder).mkdir(parents=True)

    created = api.post("/payments", {"amount": 4200, "currency": "gbp",
                                     "payment_method": "pm_card_visa", "confirm": True})
    assert created.status_code == 202
    payment = Payment.objects.get(pk=created.json()["id"])
    attempt = payment.attempts.get()
    with Connection("filesystem://", transport_options=options) as conn:
        payment_authorize.apply_async((attempt.id,), connection=conn)

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": "filesystem://",
           "CELERY_BROKER_DIR": str(broker_dir)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
         "-l", "WARNING", "-n", f"e2e-{os.getpid()}@localhost"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            payment.refresh_from_db()
            if payment.status != "authorization_requested":
                break
            time.sleep(0.2)  # polling the database for the worker's effect, bounded
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert payment.status == "captured", output[-3000:]
    assert payment.amount_captured == 4200
    assert payment.attempts.get().status == "approved"
