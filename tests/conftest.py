"""Shared fixtures: merchants with API keys, authenticated API clients, payment helpers."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from rest_framework.test import APIClient

from payments import services
from payments.models import Payment
from tests.factories import merchant_with_key
from tests.test_webhooks_support import (  # noqa: F401 (the webhook tests' fixtures, suite-wide)
    dns_fixture,
    loopback_allowed_fixture,
    network_guard_fixture,
    receivers_fixture,
)

# Stacks the tests start (tools/run.py, gunicorn, Celery) run with local settings, whose ledger
# checkpoints would land in .data/ under the test database's name and outlive it: the next
# session's database of the same name would then "miss" rows a stale checkpoint covered.
os.environ.setdefault("LEDGER_CHECKPOINT_DIR",
                      tempfile.mkdtemp(prefix="clearhouse-test-checkpoints-"))


@pytest.fixture(scope="session", autouse=True)
def celery_test_broker(tmp_path_factory) -> Iterator[None]:
    """The suite's tasks go to the in-memory broker, or with CELERY_TEST_BROKER=amqp (redis)
    to a RabbitMQ vhost (Redis server) of this run's own: tests/celery_workers.py."""
    kind = os.environ.get("CELERY_TEST_BROKER", "")
    if not kind:
        yield
        return
    from tests.celery_workers import suite_broker

    yield from suite_broker(kind, tmp_path_factory.mktemp("suite-broker"))


class Api:
    """A thin JSON client for one merchant: `api.post("/payments", {...}, key="idem-1")`."""

    def __init__(self, raw_key: str) -> None:
        self.raw_key = raw_key
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    def post(self, path: str, body: Any = None, *, key: str | None = None, **extra: Any):
        headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
        return self.client.post(f"/api/v1{path}", body if body is not None else {},
                                format="json", **headers, **extra)

    def get(self, path: str, params: dict | None = None, **extra: Any):
        return self.client.get(f"/api/v1{path}", params or {}, **extra)


def assert_error(response: Any, status: int, **expected: str) -> dict[str, Any]:
    """`response` is a `status` error whose body's fields include `expected` (code="…",
    param="…"); returns the error object for further checks."""
    assert response.status_code == status, response.content
    error = response.json()["error"]
    for field, value in expected.items():
        assert error[field] == value, error
    return error


@pytest.fixture
def merchant_and_key():
    return merchant_with_key()


@pytest.fixture
def merchant(merchant_and_key):
    return merchant_and_key[0]


@pytest.fixture
def api(merchant_and_key) -> Api:
    return Api(merchant_and_key[1])


@pytest.fixture
def other_api() -> Api:
    return Api(merchant_with_key()[1])


@pytest.fixture
def django_capture_on_commit_callbacks(django_capture_on_commit_callbacks, run_tasks_inline):
    """Commit callbacks that enqueue Celery tasks run them in-process, within this test only
    (never a global task_always_eager; the worker path has its own end-to-end test)."""
    return django_capture_on_commit_callbacks


@pytest.fixture
def run_tasks_inline():
    from config.celery_app import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


@pytest.fixture
def make_payment(merchant, django_capture_on_commit_callbacks) -> Callable[..., Payment]:
    """Create a payment and run it through the real services to the requested state."""

    def _make(amount: int = 10000, currency: str = "usd", *, state: str = "captured",
              payment_method: str = "pm_card_visa", on=None) -> Payment:
        owner = on or merchant
        manual = state == "authorized"
        payment = services.payment_create(
            merchant=owner, amount=amount, currency=currency, payment_method=payment_method,
            capture_method="manual" if manual else "automatic",
        )
        if state == "created":
            return payment
        with django_capture_on_commit_callbacks(execute=True):
            services.payment_confirm(merchant=owner, payment_id=payment.id)
        payment.refresh_from_db()
        assert payment.status == state, payment.status
        return payment

    return _make


@pytest.fixture
def settled_payment(make_payment) -> Payment:
    """A 100.00 USD payment captured and settled: its funds are in available."""
    payment = make_payment(10000)
    services.payment_settle(payment_id=payment.id, amount=10000, fee=0)
    payment.refresh_from_db()
    return payment


@contextmanager
def adapters_pointed_at(running: Any, settings: Any, *, seed: str) -> Iterator[Any]:
    """Reset the running simulator with `seed` and point the three adapters at it (short
    timeouts) until the block ends."""
    from providers import registry
    from providers.conf import providers_from_env

    running.control.reset(seed=seed)
    settings.PROVIDERS = providers_from_env({"SIMULATOR_URL": running.base_url})
    settings.PROVIDER_TIMEOUTS = {"connect": 1.0, "read": 2.0, "write": 1.0, "pool": 1.0}
    registry.reset()
    try:
        yield running
    finally:
        registry.reset()


@pytest.fixture(scope="session")
def _running_simulator():
    from providers.simulator.control import running_simulator

    with running_simulator(seed="clearhouse-tests") as simulator:
        yield simulator


@pytest.fixture
def simulator(_running_simulator, settings):
    """The provider simulator over real HTTP on 127.0.0.1, reset for each test, with the three
    adapters pointed at it."""
    with adapters_pointed_at(_running_simulator, settings, seed="clearhouse-tests"):
        yield _running_simulator
    # Forget its scheduled webhooks too: a delayed or retried notice from this test must not
    # land in a later test's database (the live server outlives the test).
    _running_simulator.control.reset(seed="clearhouse-tests")


def routing_rule(*providers: str | tuple[str, int], **conditions: Any):
    """A routing rule sending matching payments to `providers` in order (or with weights)."""
    from providers.models import RoutingRule, RoutingTarget

    rule = RoutingRule.objects.create(name="test rule", priority=conditions.pop("priority", 1),
                                      **conditions)
    for position, target in enumerate(providers):
        code, weight = target if isinstance(target, tuple) else (target, 0)
        RoutingTarget.objects.create(rule=rule, provider=code, position=position, weight=weight)
    return rule


# -- no card number at rest: every database test's rows and every log line the suite writes ---
_PAN_HITS: list[str] = []


@pytest.fixture(autouse=True)
def _no_card_numbers_at_rest(request):
    yield
    uses_db = request.node.get_closest_marker("django_db") is not None or any(
        name in request.fixturenames for name in ("db", "transactional_db", "live_server"))
    if not uses_db:
        return
    if request.node.get_closest_marker("planted_card_number"):
        return
    from django.db import connection

    from core.pan_scan import scan_database

    if connection.connection is None or connection.needs_rollback:
        return
    try:
        hits = scan_database()
    except Exception:  # the test left the connection unusable; its own failure says why
        return
    _PAN_HITS.extend(f"{request.node.nodeid}: {hit}" for hit in hits)
    assert not hits, f"card numbers stored: {hits}"


class _LogTextHandler(logging.Handler):
    """Keeps every formatted log line of the session (through the production formatter)."""

    def __init__(self) -> None:
        from core.logging import formatter

        super().__init__(level=logging.DEBUG)
        config = dict(formatter("json"))
        factory = config.pop("()")
        self.setFormatter(factory(**config))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.lines.append(record.getMessage())


_LOG_HANDLER: _LogTextHandler | None = None


def pytest_sessionstart(session):
    global _LOG_HANDLER
    _LOG_HANDLER = _LogTextHandler()
    logging.getLogger().addHandler(_LOG_HANDLER)


def pytest_sessionfinish(session, exitstatus):
    from core.pan_scan import scan_text

    if _LOG_HANDLER is None:
        return
    logging.getLogger().removeHandler(_LOG_HANDLER)
    hits = scan_text(_LOG_HANDLER.lines)
    if hits:
        print(f"\nPAN scan of {len(_LOG_HANDLER.lines)} log lines: {len(hits)} HIT(S):")
        for hit in hits[:20]:
            print(f"  {hit}")
        session.exitstatus = 1
