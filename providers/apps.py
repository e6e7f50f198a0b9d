"""Django app config for `providers`: its gauges, deploy checks and documented decline codes."""

from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        from core.errors import error_codes_register
        from core.metrics import gauge_register
        from providers import checks  # noqa: F401  (registers the deploy checks)
        from providers.errors import CODES
        from providers.selectors import breaker_states

        gauge_register("clearhouse_provider_breaker_open",
                       "1 when the provider's circuit breaker is not closed",
                       ["provider", "state"],
                       lambda: [((provider, state), 0 if state == "closed" else 1)
                                for provider, state in breaker_states()])
        # A declined provider call answers 502 with the normalised decline code.
        error_codes_register({code.code: code.message for code in CODES.values()}, status=502)
