"""Django app config for `providers`."""

from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        from core.metrics import gauge_register
        from providers import checks  # noqa: F401  (registers the deploy checks)
        from providers.selectors import breaker_states

        gauge_register("clearhouse_provider_breaker_open",
                       "1 when the provider's circuit breaker is not closed",
                       ["provider", "state"],
                       lambda: [((provider, state), 0 if state == "closed" else 1)
                                for provider, state in breaker_states()])
