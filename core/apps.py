"""Django app config for `core`."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Merchants and API keys"

    def ready(self) -> None:
        from celery.signals import task_prerun
        from django.core.signals import request_started
        from django.db.backends.signals import connection_created

        from core import checks, crypto, metrics, schema  # noqa: F401  (deploy checks, OpenAPI)
        from core.db import forget_writes
        from core.idempotency import stored_secrets_reencrypt

        crypto.at_rest_register("stored idempotent response(s)", stored_secrets_reencrypt)

        # Read-your-write pinning (core.db) lasts one request or one task.
        request_started.connect(forget_writes, dispatch_uid="core.db.forget_writes")
        task_prerun.connect(forget_writes, dispatch_uid="core.db.forget_writes")
        # Every statement timed (clearhouse_db_query_duration_seconds), replicas included.
        connection_created.connect(metrics.database_timing,
                                   dispatch_uid="clearhouse-database-timing")
