"""Django app config for `providers`."""

from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        from providers import checks  # noqa: F401  (registers the deploy checks)
