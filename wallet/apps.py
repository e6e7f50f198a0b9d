"""Django app config for `wallet`."""

from django.apps import AppConfig


class WalletConfig(AppConfig):
    name = "wallet"
