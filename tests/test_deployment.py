"""The production commands work outside Docker: `check --deploy` is clean and gunicorn serves."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "x" * 20 + "-a-long-random-production-secret-key-for-tests-0123",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,pay.example.com",
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "FIELD_ENCRYPTION_KEYS": "v2GJ1Rq3zYl6hJbLh1m3rJ7o6q2bY2o8i9p5m3HkS3Y=",
    "METRICS_TOKEN": "metrics-token-for-tests",
}


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def test_check_deploy_prints_no_issues():
    env = {**os.environ, **PRODUCTION_ENV, "DJANGO_SECURE_SSL_REDIRECT": "true"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_production_settings_start_from_env_example_alone():
    """Every variable production requires is in .env.example (with placeholder values)."""
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            example[name.strip()] = value
    required = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL",
                "FIELD_ENCRYPTION_KEYS", "METRICS_TOKEN")
    assert set(required) <= set(example), set(required) - set(example)
    env = {key: value for key, value in os.environ.items()
           if key not in required and not key.startswith(("DJANGO_", "RECON_", "BACKOFFICE_"))}
    env.update({**example, "DATABASE_URL": _database_url(),
                "FIELD_ENCRYPTION_KEYS": PRODUCTION_ENV["FIELD_ENCRYPTION_KEYS"]})
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); "
                               "from django.conf import settings; print(settings.METRICS_TOKEN)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("change-me-to-a-long-random-token")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_gunicorn_serves_the_api_with_the_production_config():
    port = _free_port()
    env = {**os.environ, **PRODUCTION_ENV, "DATABASE_URL": _database_url(),
           "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1",
           "GUNICORN_THREADS": "2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 30, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.2)  # waiting for the server to bind, bounded by the deadline
        assert body == b'{"status": "ok"}'
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/payments")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=5)
        assert raised.value.code == 401
        assert b"authentication_error" in raised.value.read()
    finally:
        server.terminate()
        server.communicate(timeout=30)
