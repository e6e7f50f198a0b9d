"""Liveness (`/healthz`) and readiness (`/readyz`: database and migrations, broker, Redis), and
the middleware that lets the orchestrator's own probes reach them."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> dict:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if pending:
            return {"ok": False, "detail": f"{len(pending)} unapplied migrations"}
        return {"ok": True}
    except Exception as exc:  # readiness reports, it does not raise
        return {"ok": False, "detail": type(exc).__name__}


def _check_broker() -> dict:
    from config.celery_app import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "detail": type(exc).__name__}


def _check_redis() -> dict:
    from django.conf import settings

    if not settings.REDIS_URL:
        return {"ok": True, "detail": "not configured (rate limits off)"}
    try:
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1,
                             socket_timeout=1).ping()
        return {"ok": True}
    except Exception as exc:
        # Payments keep working without Redis (the limiter fails open), so this is reported
        # but does not make the instance unready.
        return {"ok": False, "detail": type(exc).__name__, "critical": False}


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "broker": _check_broker(),
              "redis": _check_redis()}
    ready = all(check["ok"] or check.get("critical") is False for check in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)


PROBES: dict[str, Callable[[HttpRequest], JsonResponse]] = {"/healthz": healthz,
                                                            "/readyz": readyz}
# Headers a proxy adds: a request carrying one came from outside, whatever its socket says (a
# proxy on the same host connects from 127.0.0.1).
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                  "HTTP_FORWARDED", "HTTP_X_REAL_IP")
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class ProbeMiddleware:
    """Answers an orchestrator's probe of /healthz or /readyz before host validation and the
    TLS redirect: a Docker healthcheck asks `http://127.0.0.1:8000/readyz` (127.0.0.1 is no
    allowed host, plain http would be redirected), a kubelet asks the pod's address from its
    node. A probe is a GET or HEAD of exactly those paths from loopback or HEALTH_PROBE_NETWORKS
    with no proxy header; every other request, those paths through the load balancer included,
    goes through every check as before."""

    def __init__(self, get_response: Callable[[HttpRequest], object]) -> None:
        self.get_response = get_response
        self.networks = (*_LOOPBACK, *(ipaddress.ip_network(cidr, strict=False)
                                       for cidr in settings.HEALTH_PROBE_NETWORKS))

    def is_probe(self, request: HttpRequest) -> bool:
        if request.method not in ("GET", "HEAD") or request.path_info not in PROBES:
            return False
        if any(header in request.META for header in _PROXY_HEADERS):
            return False
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, request: HttpRequest) -> object:
        if self.is_probe(request):
            return PROBES[request.path_info](request)
        return self.get_response(request)
