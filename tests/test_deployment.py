"""The production commands work outside Docker: `check --deploy` is clean and gunicorn serves;
production settings refuse to start until every required variable has a real value."""

import os
import re
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
    "LEDGER_CHECKPOINT_SIGNING_KEY": ("9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c"
                                      "0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f"),
    "LEDGER_CHECKPOINT_DIR": "/var/lib/clearhouse/ledger-checkpoints",
    "EVIDENCE_STORAGE_DIR": "/var/lib/clearhouse/evidence",
    "PUBLIC_URL": "https://pay.example.com",
    # Providers are enabled explicitly, each classified live or test, and each one's endpoint,
    # credentials and secrets are required: real-looking values, none of them the repository's
    # development ones.
    "PROVIDERS_ENABLED": "sandbox,cielo,rede,getnet",
    "PROVIDERS_LIVE": "cielo,rede,getnet",
    "PROVIDERS_TEST": "sandbox",
    "CIELO_BASE_URL": "https://api.cieloecommerce.cielo.com.br",
    "CIELO_MERCHANT_ID": "3f1c2a9e-7b4d-4c61-9a0e-5d8b2f6c1e47",
    "CIELO_MERCHANT_KEY": "Q8rT2vX9mZ4kL7pW1nB6cY3hJ5fD0sGa",
    "CIELO_WEBHOOK_SECRET": "whsec_live_5Jf8Kq2Rz7Lm4Np9Xw3Cv6Bt1Hy0Gd",
    "REDE_BASE_URL": "https://api.userede.com.br/erede",
    "REDE_PV": "73920451",
    "REDE_TOKEN": "c4e9a1f7b2d84e6a9f03b5c7d1e2a8f6",
    "REDE_WEBHOOK_SECRET": "whsec_live_Rr4Ws8Qe2Ty6Ui0Op3As7Df1Gh5Jk",
    "GETNET_BASE_URL": "https://api.getnet.com.br",
    "GETNET_CLIENT_ID": "b7d2e9f1-4a6c-4e83-8d15-2f9a0c7b3e61",
    "GETNET_CLIENT_SECRET": "e1a7c3f9-2b8d-4f60-9c4e-7a1d5b3f8e20",
    "GETNET_SELLER_ID": "9c4f1e7a-3d2b-48e6-a15f-0b8d6c2e9f73",
    "GETNET_SIGNING_SECRET": "Zx7Cv2Bn9Mq4Wl1Ek8Rt3Yu6Io0Pa5Sd",
    "GETNET_WEBHOOK_SECRET": "whsec_live_Mn2Bv6Cx0Za4Sd8Fg1Hj5Kl9Qw3Er",
}
# Set by the environment running the tests (or a developer's shell) and read by the settings:
# left out of every production subprocess so that only what a test passes counts.
_AMBIENT_PREFIXES = ("DJANGO_", "RECON_", "BACKOFFICE_", "PROVIDERS_", "PROVIDER_", "CIELO_",
                     "REDE_", "GETNET_", "SIMULATOR_", "LEDGER_")
_AMBIENT_NAMES = {"DATABASE_URL", "FIELD_ENCRYPTION_KEYS", "METRICS_TOKEN", "DEFAULT_PROVIDER",
                  "DEMO_API_KEY"}


def hermetic_environ() -> dict[str, str]:
    return {key: value for key, value in os.environ.items()
            if key not in _AMBIENT_NAMES and not key.startswith(_AMBIENT_PREFIXES)}


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def test_check_deploy_prints_no_issues():
    env = {**hermetic_environ(), **PRODUCTION_ENV, "DJANGO_SECURE_SSL_REDIRECT": "true"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def _env_example() -> dict[str, str]:
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            example[name.strip()] = value
    return example


# What a deployment's processes read from the environment: the settings (not the local, test
# and build ones), gunicorn's config and the tracing/Sentry set-up.
_READ_ENV = re.compile(r"""(?:\benv(?:\.\w+)?\(|environ\.get\(|environ\[|_codes\(environ,)"""
                       r"""\s*["']([A-Z][A-Z0-9_]+)["']""")
_DEPLOYMENT_CONFIG = ("config/settings/base.py", "config/settings/production.py",
                      "config/gunicorn.py", "config/observability.py", "providers/conf.py")


def test_every_variable_the_deployment_reads_is_named_in_env_example():
    """Set there, or shown commented out with an example: an operator finds every knob in one
    file (the provider variables come from providers/conf.py and are listed there too)."""
    from providers.conf import ENVIRONMENT

    read = {name for path in _DEPLOYMENT_CONFIG
            for name in _READ_ENV.findall((ROOT / path).read_text())}
    read |= {name for keys in ENVIRONMENT.values() for name, _ in keys.values()}
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(),
                           re.MULTILINE))
    assert {"EVENT_STREAM_NATS_URL", "DATABASE_REPLICA_URL", "GUNICORN_BIND",
            "SENTRY_DSN", "PROVIDER_READ_TIMEOUT_SECONDS", "PROVIDER_AUTHORIZATION_DAYS",
            "PROVIDERS_LIVE"} <= read  # the pattern finds each way they are read
    assert read - named == set()


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); "
                               "from django.conf import settings; print(settings.METRICS_TOKEN)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def test_production_settings_from_env_example_alone_refuse_to_start_and_name_what_is_missing():
    """.env.example lists every variable production requires; the provider credentials are
    left empty there, so production refuses to start until each one is given a real value."""
    example = _env_example()
    required = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL",
                "FIELD_ENCRYPTION_KEYS", "METRICS_TOKEN",
                *(name for name in PRODUCTION_ENV if name != "DJANGO_SECURE_SSL_REDIRECT"))
    assert set(required) <= set(example), set(required) - set(example)
    env = {**hermetic_environ(), **example, "DATABASE_URL": _database_url()}
    result = _start(env)
    assert result.returncode != 0, result.stdout
    message = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message
    missing = [name for name in PRODUCTION_ENV if name.startswith(("CIELO_", "REDE_", "GETNET_"))]
    assert all(name in message for name in missing), message

    # With the placeholders replaced by real-looking values (and nothing else), it starts.
    filled = {**env, **{name: value for name, value in PRODUCTION_ENV.items()
                        if not example.get(name)},
              "FIELD_ENCRYPTION_KEYS": PRODUCTION_ENV["FIELD_ENCRYPTION_KEYS"]}
    started = _start(filled)
    assert started.returncode == 0, started.stderr[-3000:]
    assert started.stdout.startswith("change-me-to-a-long-random-token")


def test_env_example_placeholders_fail_the_deploy_checks_until_replaced():
    env = {**hermetic_environ(), **_env_example(), **{
        name: value for name, value in PRODUCTION_ENV.items()
        if name.startswith(("CIELO_", "REDE_", "GETNET_"))}}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "core.E002" in result.stderr, result.stderr  # DJANGO_SECRET_KEY, METRICS_TOKEN
    assert "core.E003" in result.stderr  # the FIELD_ENCRYPTION_KEYS placeholder is no key
    assert "ledger.E001" in result.stderr  # no checkpoint signing key yet


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_gunicorn_serves_the_api_with_the_production_config():
    port = _free_port()
    env = {**hermetic_environ(), **PRODUCTION_ENV, "DATABASE_URL": _database_url(),
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
