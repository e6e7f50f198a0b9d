"""Django app config for `reconciliation`."""

from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"
