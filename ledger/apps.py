"""Django app config for `ledger`: registers its deploy checks."""

from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"

    def ready(self) -> None:
        from ledger import checks  # noqa: F401 - registers the deploy checks
