"""Looks up provider adapters by code: the sandbox and the HTTP adapters (Cielo, Rede, Getnet)."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings

from providers.base import Provider
from providers.cielo import CieloProvider
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
    return sorted(_FACTORIES)


def get_provider(code: str) -> Provider:
    if code not in _INSTANCES:
        if code not in _FACTORIES:
            raise UnknownProvider(f"No provider adapter is registered for {code!r}.")
        _INSTANCES[code] = _FACTORIES[code]()
    return _INSTANCES[code]


def default_provider_code() -> str:
    return settings.DEFAULT_PROVIDER


def reset() -> None:
    """Forget adapter instances (tests use this to start from an empty sandbox)."""
    _INSTANCES.clear()


register("cielo", CieloProvider)
register("rede", RedeProvider)
register("getnet", GetnetProvider)
