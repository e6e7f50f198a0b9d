"""Provider endpoints, credentials, modes, HTTP timeouts and breaker tuning from the environment.

Django-free so `config/settings/base.py` can import it. Development and the tests enable every
adapter in test mode, pointed at the local simulator (`python -m providers.simulator`, port
8100) with its dev credentials. Production (`production=True`) has no defaults at all: the
providers are listed in PROVIDERS_ENABLED, and each of them in exactly one of PROVIDERS_LIVE
(live traffic) and PROVIDERS_TEST (test mode); every endpoint, credential and secret of an
enabled provider must be set, or start-up stops with an ImproperlyConfigured naming each
missing variable or unclassified provider.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured  # an exception class: no setup needed

SANDBOX = "sandbox"
HTTP_PROVIDERS = ("cielo", "rede", "getnet")
KNOWN_PROVIDERS = (SANDBOX, *HTTP_PROVIDERS)
# Never live, whatever the configuration says: it charges nothing.
TEST_ONLY_PROVIDERS = frozenset({SANDBOX})

# provider → config key → (environment variable, development default). The credentials match
# the simulator's and are never valid at a real provider; "{simulator}" is SIMULATOR_URL.
ENVIRONMENT: dict[str, dict[str, tuple[str, str]]] = {
    "cielo": {
        "base_url": ("CIELO_BASE_URL", "{simulator}/cielo"),
        "merchant_id": ("CIELO_MERCHANT_ID", "9d2d8b1e-5c8f-4f3e-9a57-000000c1e10a"),
        "merchant_key": ("CIELO_MERCHANT_KEY", "dev-cielo-merchant-key"),
        "webhook_secret": ("CIELO_WEBHOOK_SECRET", "whsec_dev_cielo"),
    },
    "rede": {
        "base_url": ("REDE_BASE_URL", "{simulator}/rede"),
        "pv": ("REDE_PV", "10000001"),
        "token": ("REDE_TOKEN", "dev-rede-token"),
        "webhook_secret": ("REDE_WEBHOOK_SECRET", "whsec_dev_rede"),
    },
    "getnet": {
        "base_url": ("GETNET_BASE_URL", "{simulator}/getnet"),
        "client_id": ("GETNET_CLIENT_ID", "dev-getnet-client"),
        "client_secret": ("GETNET_CLIENT_SECRET", "dev-getnet-client-secret"),
        "seller_id": ("GETNET_SELLER_ID", "6eb2412c-165a-41cd-b1d9-76c575d70a28"),
        "signing_secret": ("GETNET_SIGNING_SECRET", "dev-getnet-signing-secret"),
        "webhook_secret": ("GETNET_WEBHOOK_SECRET", "whsec_dev_getnet"),
    },
}
# Each adapter's production endpoints (scheme, host and path prefix), which a test-mode provider
# must never use: its sandbox and homologation hosts are elsewhere (Cielo's apisandbox…, Rede's
# sandbox-erede… or api.userede.com.br/desenvolvedores, Getnet's api-sandbox…). The deploy checks
# refuse a test-mode provider pointed at one, since test merchants would then charge real cards.
PRODUCTION_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "cielo": ("https://api.cieloecommerce.cielo.com.br",
              "https://apiquery.cieloecommerce.cielo.com.br"),
    "rede": ("https://api.userede.com.br/erede",),
    "getnet": ("https://api.getnet.com.br",),
}
# Every development credential and secret by variable name (the deploy checks refuse them).
DEV_CREDENTIALS: dict[str, str] = {
    name: default for entries in ENVIRONMENT.values()
    for key, (name, default) in entries.items() if key != "base_url"
}


def simulator_url(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("SIMULATOR_URL") or (
        f"http://127.0.0.1:{environ.get('SIMULATOR_PORT') or '8100'}")


def _codes(environ: Mapping[str, str], name: str) -> list[str]:
    return [code.strip() for code in environ.get(name, "").split(",") if code.strip()]


def enabled_from_env(environ: Mapping[str, str] = os.environ, *, production: bool = False
                     ) -> list[str]:
    """PROVIDERS_ENABLED: required in production; every adapter in development."""
    if not environ.get("PROVIDERS_ENABLED"):
        if production:
            raise ImproperlyConfigured(
                "Set PROVIDERS_ENABLED: production enables providers explicitly "
                f"(comma-separated, of {', '.join(KNOWN_PROVIDERS)}).")
        return list(KNOWN_PROVIDERS)
    enabled = _codes(environ, "PROVIDERS_ENABLED")
    unknown = [code for code in enabled if code not in KNOWN_PROVIDERS]
    if unknown:
        raise ImproperlyConfigured(f"PROVIDERS_ENABLED names unknown providers {unknown}; "
                                   f"known: {', '.join(KNOWN_PROVIDERS)}.")
    return enabled


def live_from_env(environ: Mapping[str, str] = os.environ, *, enabled: Iterable[str]
                  ) -> list[str]:
    """PROVIDERS_LIVE: the enabled providers that take live traffic (default none: a provider is
    test until production config says otherwise). The sandbox is never live (see
    TEST_ONLY_PROVIDERS); listing it is refused by the deploy checks."""
    live = _codes(environ, "PROVIDERS_LIVE")
    stray = [code for code in live if code not in set(enabled)]
    if stray:
        raise ImproperlyConfigured(f"PROVIDERS_LIVE names providers that are not enabled: "
                                   f"{stray}; add them to PROVIDERS_ENABLED or remove them.")
    return live


def test_from_env(environ: Mapping[str, str] = os.environ, *, enabled: Iterable[str],
                  live: Iterable[str], production: bool = False) -> list[str]:
    """PROVIDERS_TEST: the enabled providers in test mode (test merchants' traffic only).
    Production classifies every enabled provider explicitly, in exactly one of PROVIDERS_LIVE
    and PROVIDERS_TEST: a provider an operator forgot to list live must not quietly become a
    test provider with production credentials. Development defaults to every enabled provider
    that is not live."""
    enabled, live = list(enabled), set(live)
    test = _codes(environ, "PROVIDERS_TEST")
    stray = [code for code in test if code not in enabled]
    if stray:
        raise ImproperlyConfigured(f"PROVIDERS_TEST names providers that are not enabled: "
                                   f"{stray}; add them to PROVIDERS_ENABLED or remove them.")
    both = [code for code in test if code in live]
    if both:
        raise ImproperlyConfigured(f"{both} are in both PROVIDERS_LIVE and PROVIDERS_TEST; a "
                                   "provider is live or test, never both.")
    unclassified = [code for code in enabled if code not in live and code not in test]
    if production and unclassified:
        raise ImproperlyConfigured(
            f"Production classifies every enabled provider: {unclassified} is in neither "
            "PROVIDERS_LIVE nor PROVIDERS_TEST. List it in PROVIDERS_LIVE if it takes live "
            "money, or in PROVIDERS_TEST if it is in test mode (pointed at the provider's "
            "sandbox, with sandbox credentials).")
    return [*test, *unclassified]


def providers_from_env(environ: Mapping[str, str] = os.environ, *, production: bool = False,
                       enabled: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Config of each enabled HTTP adapter (all three when `enabled` is None). In production
    every variable must be set: one ImproperlyConfigured lists all that are missing."""
    codes = [code for code in (HTTP_PROVIDERS if enabled is None else enabled)
             if code in ENVIRONMENT]
    simulator = simulator_url(environ)
    missing: list[str] = []
    providers: dict[str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {}
        for key, (name, default) in ENVIRONMENT[code].items():
            value = environ.get(name, "").strip()
            if not value and production:
                missing.append(name)
            entry[key] = value or default.format(simulator=simulator)
        providers[code] = entry
    if missing:
        raise ImproperlyConfigured(
            "Production requires every endpoint, credential and secret of an enabled provider "
            f"(PROVIDERS_ENABLED); missing: {', '.join(missing)}.")
    return providers


def timeouts_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, float]:
    """Seconds. A provider entry in PROVIDERS may override any of them (e.g. "read": 30)."""
    return {
        "connect": float(environ.get("PROVIDER_CONNECT_TIMEOUT_SECONDS") or 2.0),
        "read": float(environ.get("PROVIDER_READ_TIMEOUT_SECONDS") or 15.0),
        "write": float(environ.get("PROVIDER_WRITE_TIMEOUT_SECONDS") or 5.0),
        "pool": float(environ.get("PROVIDER_POOL_TIMEOUT_SECONDS") or 2.0),
    }


def breaker_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    return {
        "failure_threshold": int(environ.get("PROVIDER_BREAKER_FAILURES") or 5),
        "window_seconds": int(environ.get("PROVIDER_BREAKER_WINDOW_SECONDS") or 60),
        "cooldown_seconds": int(environ.get("PROVIDER_BREAKER_COOLDOWN_SECONDS") or 30),
        # A half-open probe that never reported back frees its slot after this long.
        "probe_timeout_seconds": int(environ.get("PROVIDER_BREAKER_PROBE_TIMEOUT_SECONDS")
                                     or 30),
    }


# How long each acquirer keeps an uncaptured authorization before letting it lapse (days); the
# janitor voids it then. PROVIDER_AUTHORIZATION_DAYS="cielo=15,rede=28" overrides entries.
AUTHORIZATION_DAYS = {"cielo": 15, "rede": 28, "getnet": 28, "sandbox": 7}
DEFAULT_AUTHORIZATION_DAYS = 7


def authorization_days_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    days = dict(AUTHORIZATION_DAYS)
    for item in filter(None, (environ.get("PROVIDER_AUTHORIZATION_DAYS") or "").split(",")):
        code, _, value = item.partition("=")
        if not value.strip().isdigit() or int(value) < 1:
            raise ImproperlyConfigured(
                f"PROVIDER_AUTHORIZATION_DAYS: {item!r} is not provider=days (days ≥ 1).")
        days[code.strip()] = int(value)
    return days


PROVIDERS = providers_from_env()
PROVIDER_TIMEOUTS = timeouts_from_env()
PROVIDER_BREAKER = breaker_from_env()
