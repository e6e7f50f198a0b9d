"""Django app config for `core`."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Merchants and API keys"

    def ready(self) -> None:
        from core import checks, schema  # noqa: F401  (deploy checks, OpenAPI auth extension)
