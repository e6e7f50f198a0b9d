"""`make run`: database, migrations, demo data, then web, worker, beat (and the provider
simulator once it exists) in the foreground until Ctrl-C, which stops everything it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kombu.utils.url import maybe_sanitize_url

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def manage(*args: str, capture: bool = False) -> str:
    result = subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True, text=True,
                            stdout=subprocess.PIPE if capture else None)
    return result.stdout or ""


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    if not os.environ.get("DATABASE_URL"):
        sys.path.insert(0, str(ROOT / "tools"))
        import devdb

        print(f"Embedded PostgreSQL: {devdb.start()}", flush=True)
    manage("migrate", "--no-input", "-v", "0")
    if any(name.startswith("RECON_") for name in os.environ):
        # e.g. RECON_JANITOR_INTERVAL_SECONDS=5 make run: beat's rows follow the environment.
        manage("recon_schedule", "--sync")
    seed = json.loads(manage("demo_seed", capture=True))
    sys.path.insert(0, str(ROOT / "tools"))
    import devbroker

    embedded_broker = None
    if not (os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL")):
        embedded_broker = devbroker.start(Path(os.environ.get(
            "EMBEDDED_BROKER_DIR", str(ROOT / ".data" / "valkey"))))
        if embedded_broker is not None:  # children inherit it
            os.environ["CELERY_BROKER_URL"] = embedded_broker[0]
    broker = maybe_sanitize_url(  # amqp://user:**@host/vhost: the password is not printed
        os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL") or "filesystem")
    if embedded_broker is not None:
        broker += " (embedded Valkey, data in .data/valkey)"
    base = f"http://{host}:{port}"
    print(f"""
Clearhouse is starting.
  API        {base}/api/v1/     docs {base}/api/docs/
  Admin      {base}/admin/      login {seed['admin_username']} / {seed['admin_password']}
  API key    {seed['api_key']}
  Broker     {broker}
Try:
  curl -s {base}/api/v1/payments -H "Authorization: Bearer {seed['api_key']}" \\
       -H "Content-Type: application/json" -H "Idempotency-Key: demo-1" \\
       -d '{{"amount": 1050, "currency": "usd", "payment_method": "pm_card_visa", "confirm": true}}'
Press Ctrl-C to stop.
""", flush=True)
    celery = [PY, "-m", "celery", "-A", "config"]
    commands = {
        "web": [PY, "manage.py", "runserver", "--noreload", f"{host}:{port}"],
        # One worker per purpose (config/celery_app.py QUEUES): a backlog in one queue never
        # starves another.
        "worker-providers": [*celery, "worker", "-l", "INFO", "-Q", "providers,inbound",
                             "--concurrency", "2", "-n", "providers@%h"],
        "worker-webhooks": [*celery, "worker", "-l", "INFO", "-Q", "webhooks",
                            "--concurrency", "2", "-n", "webhooks@%h"],
        "worker-reconciliation": [*celery, "worker", "-l", "INFO", "-Q", "reconciliation",
                                  "--concurrency", "1", "-n", "reconciliation@%h"],
        "beat": [*celery, "beat", "-l", "INFO", "--schedule", str(ROOT / ".data" / "beat")],
    }
    simulator = ROOT / "providers" / "simulator" / "__main__.py"
    if simulator.exists():
        # Its books live in .data: a restarted `make run` finds every charge it made before
        # and never hands a provider reference out twice.
        commands["simulator"] = [PY, "-m", "providers.simulator", "--state-file", os.environ.get(
            "SIMULATOR_STATE_FILE", str(ROOT / ".data" / "simulator" / "books.pickle"))]
    # The development server runs each request in a thread of its own: a persistent database
    # connection would be one per request, open until the garbage collector closes it, and a
    # burst of requests ran PostgreSQL out of connections ('too many clients already', 500).
    environments = {"web": {**os.environ, "DB_CONN_MAX_AGE": "0"}}
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                                    env=environments.get(name))
             for name, cmd in commands.items()}
    if embedded_broker is not None:
        procs_and_broker = {**procs, "broker": embedded_broker[1]}
    else:
        procs_and_broker = procs

    def stop(*_: object) -> None:
        # SIGTERM to each main process only: Celery then does a warm shutdown of its pool.
        # The embedded broker goes last, once the workers have handed their tasks back.
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if embedded_broker is not None:
            embedded_broker[1].terminate()
            try:
                embedded_broker[1].wait(timeout=10)
            except subprocess.TimeoutExpired:
                embedded_broker[1].kill()

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a shell that starts us in the background ignores SIGINT.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            for name, proc in procs_and_broker.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the rest.", flush=True)
                    stop()
                    return proc.returncode or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping…", flush=True)
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
