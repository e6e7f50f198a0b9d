"""The orchestrator's probes reach /healthz and /readyz in production without weakening what
real traffic goes through (core.health.ProbeMiddleware, SECURE_REDIRECT_EXEMPT): a probe is a
GET/HEAD of those paths from loopback or HEALTH_PROBE_NETWORKS with no proxy header."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PROXY = {"HTTP_X_FORWARDED_FOR": "203.0.113.7", "HTTP_X_FORWARDED_PROTO": "https"}


@pytest.fixture
def production(settings):
    """Production's transport posture: one public host, TLS redirect, health paths exempt."""
    settings.ALLOWED_HOSTS = ["pay.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    settings.HEALTH_PROBE_NETWORKS = []
    return settings


def _client(address: str = "127.0.0.1") -> Client:
    return Client(REMOTE_ADDR=address)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_a_loopback_probe_over_plain_http_with_host_127_0_0_1_is_answered(production, path):
    response = _client().get(path, HTTP_HOST="127.0.0.1:8000")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "ok"
    assert _client("::1").head(path, HTTP_HOST="[::1]:8000").status_code == 200


def test_real_traffic_is_still_redirected_and_host_checked(production):
    client = _client()
    # Plain http to the API with the right host: redirected to https, as before.
    answer = client.get("/api/v1/payments", HTTP_HOST="pay.example.com")
    assert answer.status_code == 301 and answer["Location"].startswith("https://")
    # Through a proxy on this host (socket from 127.0.0.1): not a probe, so the Host is checked.
    assert client.get("/readyz", HTTP_HOST="127.0.0.1", **PROXY).status_code == 400
    assert client.get("/readyz", HTTP_HOST="evil.example", **PROXY).status_code == 400
    # A load balancer's http check with the right Host: exempt from the redirect, answered.
    assert client.get("/readyz", HTTP_HOST="pay.example.com").status_code == 200
    # Other methods and look-alike paths are not probes.
    assert client.post("/readyz", HTTP_HOST="127.0.0.1").status_code == 400
    assert client.get("/readyz/", HTTP_HOST="127.0.0.1").status_code == 400
    assert client.get("/healthzz", HTTP_HOST="127.0.0.1").status_code == 400


def test_a_probe_from_another_network_needs_that_network_listed(production):
    kubelet = _client("10.20.0.1")
    assert kubelet.get("/readyz", HTTP_HOST="10.20.3.4:8000").status_code == 400
    production.HEALTH_PROBE_NETWORKS = ["10.20.0.0/16"]
    kubelet = _client("10.20.0.1")  # the middleware reads the setting when it is built
    assert kubelet.get("/readyz", HTTP_HOST="10.20.3.4:8000").status_code == 200
    assert _client("10.21.0.1").get("/readyz", HTTP_HOST="10.20.3.4:8000").status_code == 400
