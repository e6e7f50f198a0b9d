"""Liveness (`/healthz`) and readiness (`/readyz`: database and migrations, broker, Redis)."""

from __future__ import annotations

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
