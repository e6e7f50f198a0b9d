"""Attacks on the production deployment (issue 20): the probe exemption, /metrics, the deploy
checks an operator following the README meets. Each hole found has a test that failed before
its fix; the attacks that held stay as tests."""

import subprocess
import sys

import pytest
from django.test import Client

from tests.test_deployment import PRODUCTION_ENV, ROOT, _database_url, _start, hermetic_environ

pytestmark = pytest.mark.django_db


@pytest.fixture
def deployed(settings):
    """Production's transport posture (tests/test_probes.py) with a metrics token."""
    for name, value in dict(ALLOWED_HOSTS=["pay.example.com"], SECURE_SSL_REDIRECT=True,
                            SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
                            SECURE_REDIRECT_EXEMPT=[r"^healthz$", r"^readyz$"],
                            HEALTH_PROBE_NETWORKS=[],
                            METRICS_TOKEN="metrics-token-for-attack-tests").items():
        setattr(settings, name, value)
    return settings


@pytest.mark.parametrize("path", [
    "/healthz/../api/v1/payments", "//healthz", "/healthz;x", "/healthz/", "/%68ealthz",
    "/readyz%2F..%2Fmetrics", "/api/v1/payments?/healthz", "/HEALTHZ", "/metrics",
])
def test_path_tricks_from_loopback_with_a_foreign_host_never_bypass_host_validation(
        deployed, path):
    """Only the exact probe paths skip host validation; anything else from 127.0.0.1 with a
    Host that is not allowed is refused (400), never served."""
    response = Client(REMOTE_ADDR="127.0.0.1").get(path, HTTP_HOST="evil.example")
    if path == "/%68ealthz":  # the test client decodes like a WSGI server: it is the probe
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        return
    assert response.status_code == 400, (path, response.status_code, response.content[:200])


@pytest.mark.parametrize("header", ["HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP",
                                    "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO"])
def test_a_proxied_probe_path_goes_through_host_validation(deployed, header):
    response = Client(REMOTE_ADDR="127.0.0.1").get("/readyz", HTTP_HOST="evil.example",
                                                   **{header: "127.0.0.1"})
    assert response.status_code == 400


@pytest.mark.parametrize("method", ["post", "put", "delete", "options"])
def test_other_methods_on_probe_paths_are_not_exempt(deployed, method):
    response = getattr(Client(REMOTE_ADDR="127.0.0.1"), method)("/healthz",
                                                                HTTP_HOST="evil.example")
    assert response.status_code == 400


def test_probe_from_an_outside_address_is_host_checked(deployed):
    assert Client(REMOTE_ADDR="203.0.113.9").get(
        "/healthz", HTTP_HOST="evil.example").status_code == 400
    # The allowed host over plain http: health exempt from the redirect, the API is not.
    client = Client(REMOTE_ADDR="203.0.113.9")
    assert client.get("/healthz", HTTP_HOST="pay.example.com").status_code == 200
    assert client.get("/healthz/../api/v1/payments",
                      HTTP_HOST="pay.example.com").status_code == 301


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Bearer metrics-token-for-attack-test",
    "Bearer metrics-token-for-attack-tests-and-more", "Basic bWV0cmljcw==",
    "Bearer m\u00e9trics-token-for-attack-tests"])
def test_metrics_refuse_a_missing_or_wrong_token(deployed, authorization):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = Client().get("/metrics", HTTP_HOST="pay.example.com", secure=True, **headers)
    assert response.status_code == 401
    assert b"http_requests" not in response.content


def _check_deploy(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**hermetic_environ(), **PRODUCTION_ENV, "DJANGO_SECURE_SSL_REDIRECT": "true",
           **overrides}
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("token", ["", "   ", "short"])
def test_an_empty_or_trivial_metrics_token_fails_the_deploy_checks(token):
    """METRICS_TOKEN= (set, empty) used to pass `check --deploy` and make /metrics public:
    production must fail closed."""
    result = _check_deploy(METRICS_TOKEN=token)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "METRICS_TOKEN" in result.stdout + result.stderr


@pytest.mark.parametrize("token", ["", "   "])
def test_production_refuses_to_start_with_an_empty_metrics_token(token):
    """gunicorn runs no deploy checks: production settings themselves refuse an empty token
    (with none, /metrics answers anyone) instead of serving the metrics to the internet."""
    env = {**hermetic_environ(), **PRODUCTION_ENV, "DATABASE_URL": _database_url(),
           "METRICS_TOKEN": token}
    result = _start(env)
    assert result.returncode != 0, result.stdout
    message = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in message and "METRICS_TOKEN" in message, message


def test_sentry_events_carry_no_card_number_api_key_or_webhook_secret():
    """What Sentry would send for an exception in a payment view: the card number in the
    message, a frame's locals and the request body; the API key in a header and a local; a
    webhook secret under an innocuous key. Everything sensitive is gone before it leaves."""
    from config.observability import _sentry_scrub

    pan, key, secret = "4111111111111111", "sk_live_abcdEFGH1234abcd", "whsec_live_5Jf8Kq2Rz7Lm"
    event = {
        "message": f"card {pan} declined for {key}",
        "exception": {"values": [{"type": "ValueError", "value": "bad number 4111 1111 1111 1111",
                                  "stacktrace": {"frames": [{"vars": {
                                      "number": f"'{pan}'", "key": f"'{key}'",
                                      "endpoint": {"secret": secret, "url": "https://m.example"},
                                      "note": f"signed with {secret}"}}]}}]},
        "request": {"headers": {"Authorization": f"Bearer {key}", "Host": "pay.example.com"},
                    "data": f'{{"card": {{"number": "{pan}", "cvc": "123"}}}}'},
        "extra": {"args": (pan, key)},
    }
    rendered = repr(_sentry_scrub(event, {}))
    # A parsed JSON body: the card's security code is sensitive authentication data (never
    # kept after authorisation, logs and error reports included), whatever it is called.
    parsed = _sentry_scrub({"request": {"data": {"card": {
        "number": pan, "cvc": "731", "cvv": "842", "security_code": "953", "CVV2": "164"}}}}, {})
    for code in ("731", "842", "953", "164"):
        assert code not in repr(parsed), parsed
    for leaked in (pan, "4111 1111 1111 1111", key, secret):
        assert leaked not in rendered, (leaked, rendered)
    assert "pay.example.com" in rendered and "https://m.example" in rendered
