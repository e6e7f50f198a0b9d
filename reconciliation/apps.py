"""Django app config for `reconciliation`: registers the writer behind `core.breaks`."""

from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"

    def ready(self) -> None:
        from core.breaks import register_break_writer
        from reconciliation.services import breaks_open

        register_break_writer(lambda specs: breaks_open(specs=specs))
