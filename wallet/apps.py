"""Django app config for `wallet`: registers the applier of inbound provider events about
payouts and deposits with the inbox (`webhooks.inbound`)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class WalletConfig(AppConfig):
    name = "wallet"

    def ready(self) -> None:
        from wallet import services
        from webhooks.inbound import register_event_applier

        def movement_apply(event: Any, **_context: Any) -> str:
            # A movement row exists before its provider hears of it: nothing to confirm or hold.
            return services.movement_provider_event_apply(event=event)

        register_event_applier(("payout", "deposit"), movement_apply)
