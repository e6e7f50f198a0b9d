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
        _register_event_types()


def _register_event_types() -> None:
    """The events deposits and payouts emit (core.events: the documented catalogue)."""
    from core.events import event_types_register
    from wallet.serializers import DepositOutput, PayoutOutput

    catalogue = {
        "deposit": (DepositOutput, {
            "deposit.created": "A deposit was created (status `pending`).",
            "deposit.succeeded": "The provider confirmed the deposit; its amount is available.",
            "deposit.failed": "The provider refused the deposit; nothing was credited.",
        }),
        "payout": (PayoutOutput, {
            "payout.created": "A payout was created and its amount reserved (status "
                              "`pending`).",
            "payout.in_transit": "The provider accepted the payout; funds are on their way.",
            "payout.paid": "The bank received the payout.",
            "payout.failed": "The payout failed; its amount was returned to available.",
        }),
    }
    for object_name, (serializer, types) in catalogue.items():
        event_types_register(object=object_name, serializer=serializer, types=types)
