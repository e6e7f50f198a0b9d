"""`make smoke-production` passes: the production topology (gunicorn with several workers, a
Celery worker, beat, the simulator) from deploy/demo.env on this machine's PostgreSQL and Redis,
checked end to end by tools/smoke_production.py and stopped. Runs on CI's services path
(REDIS_URL set, PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 answering); skips
elsewhere, saying so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.celery_workers import broker

__all__ = ["broker"]  # the fixture, used by name
ROOT = Path(__file__).resolve().parent.parent


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _smoke_database_url(suffix: str) -> str:
    """A database of its own on the 5432 server, named after this run's (never the suite's)."""
    given = urlsplit(os.environ.get("DATABASE_URL", ""))
    if given.hostname in ("127.0.0.1", "localhost") and given.port == 5432 and given.path:
        return urlunsplit(given._replace(path=given.path.rstrip("/") + f"_smoke_{suffix}"))
    return f"postgres://postgres@127.0.0.1:5432/clearhouse_smoke_{suffix}"


def _smoke(tmp_path: Path, broker: str, **env: str) -> dict:
    """`make smoke-production` with the Celery broker `env` gives (else the machine's Redis),
    its figures once it passed: the checks every broker must pass made here."""
    environ = {name: value for name, value in os.environ.items()
               if name not in ("CELERY_BROKER_URL", "SMOKE_BROKER_URL")}
    result = subprocess.run(
        ["make", "-s", "smoke-production", f"SMOKE_ARGS=--work-dir {tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=900,
        env={**environ, "SMOKE_DATABASE_URL": _smoke_database_url(broker),
             "SMOKE_REDIS_URL": os.environ["REDIS_URL"], **env})
    logs = "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
                   for log in sorted((tmp_path / "logs").glob("*.log")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs
    assert result.stdout.rstrip().endswith("smoke-production passed")
    figures = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    assert figures["broker"] == broker
    http = figures["http_requests"]
    assert http["scraped"] == http["sent"] == sum(http["per_process"].values())
    assert sum(1 for count in http["per_process"].values() if count) >= 2
    assert figures["worker_metrics"]["authorizations"] >= 1
    assert figures["payment"]["provider"] == "cielo"
    assert set(figures["stopped"]) == {"web", "worker", "beat", "simulator"}
    return figures


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"),
                       reason="the services path only (REDIS_URL set): the newcomer run leaves "
                              "the machine's PostgreSQL and Redis alone"),
    pytest.mark.skipif(not (_answers(5432) and _answers(6379)),
                       reason="needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379"),
]


@pytest.mark.parametrize("broker", ["amqp"], indirect=True)
def test_make_smoke_production_passes_with_celery_on_rabbitmq(tmp_path, broker):
    """CELERY_BROKER_URL=amqp://… as an operator sets it (here a private vhost)."""
    _smoke(tmp_path, "amqp", CELERY_BROKER_URL=broker.url)


def test_make_smoke_production_passes(tmp_path):
    figures = _smoke(tmp_path, "redis")
    # One trace from the API request through the task to the provider's HTTP call (the dev
    # install has the observability group; the smoke tool says so where it is missing).
    spans = figures["trace"]["spans"]
    assert {"clearhouse-web: POST api/v1/payments",
            "clearhouse-worker: run/payments.tasks.payment_authorize",
            "clearhouse-worker: POST"} <= set(spans), spans
