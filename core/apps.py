"""Django app config for `core`."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Merchants and API keys"

    def ready(self) -> None:
        from celery.signals import task_prerun
        from django.core.signals import request_started

        from core import checks, schema  # noqa: F401  (deploy checks, OpenAPI auth extension)
        from core.db import forget_writes

        # Read-your-write pinning (core.db) lasts one request or one task.
        request_started.connect(forget_writes, dispatch_uid="core.db.forget_writes")
        task_prerun.connect(forget_writes, dispatch_uid="core.db.forget_writes")
