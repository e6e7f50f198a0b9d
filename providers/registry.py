"""Looks up provider adapters by code (the sandbox and the HTTP adapters: Cielo, Rede, Getnet)
and says which mode each one is in.

Only the providers in `settings.PROVIDERS_ENABLED` are reachable: any other code is unknown
(routing never picks it, its inbound webhook URL answers 404). A provider is live when it is in
`settings.PROVIDERS_LIVE` and is not test-only (the sandbox never is); every other enabled
provider is test. Settings are read on each call, so tests can override them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.conf import settings

from providers.base import Provider
from providers.cielo import CieloProvider
from providers.conf import AUTHORIZATION_DAYS, DEFAULT_AUTHORIZATION_DAYS, TEST_ONLY_PROVIDERS
from providers.getnet import GetnetProvider
from providers.rede import RedeProvider
from providers.sandbox import SandboxProvider

_FACTORIES: dict[str, Callable[[], Provider]] = {"sandbox": SandboxProvider}
_INSTANCES: dict[str, Provider] = {}


class UnknownProvider(LookupError):
    pass


def register(code: str, factory: Callable[[], Provider]) -> None:
    _FACTORIES[code] = factory
    _INSTANCES.pop(code, None)


def registered_codes() -> list[str]:
    """Codes with an adapter that this deployment enables, sorted."""
    enabled = set(settings.PROVIDERS_ENABLED)
    return sorted(code for code in _FACTORIES if code in enabled)


def authorization_validity(code: str) -> timedelta:
    """How long provider `code` holds an authorization we have not captured."""
    days = getattr(settings, "PROVIDER_AUTHORIZATION_DAYS", None) or AUTHORIZATION_DAYS
    return timedelta(days=days.get(code, DEFAULT_AUTHORIZATION_DAYS))


def provider_is_live(code: str) -> bool:
    return code in settings.PROVIDERS_LIVE and code not in TEST_ONLY_PROVIDERS


def codes_of_mode(*, livemode: bool) -> list[str]:
    """The enabled providers that may carry this mode's money: live or test, never both."""
    return [code for code in registered_codes() if provider_is_live(code) == livemode]


def get_provider(code: str) -> Provider:
    if code not in _FACTORIES or code not in settings.PROVIDERS_ENABLED:
        raise UnknownProvider(f"No provider adapter is enabled for {code!r}.")
    if code not in _INSTANCES:
        _INSTANCES[code] = _FACTORIES[code]()
    return _INSTANCES[code]


def reset() -> None:
    """Forget adapter instances (tests use this to start from an empty sandbox)."""
    _INSTANCES.clear()


register("cielo", CieloProvider)
register("rede", RedeProvider)
register("getnet", GetnetProvider)
