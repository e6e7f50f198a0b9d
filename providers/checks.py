"""Deploy checks (`manage.py check --deploy`) for provider configuration: no development
credential of the repository, neither the sandbox nor the simulator taking live traffic, and no
test-mode provider that reaches real money (a production endpoint, or a live one's endpoint or
credentials)."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

from providers.conf import (
    DEV_CREDENTIALS,
    ENVIRONMENT,
    PRODUCTION_ENDPOINTS,
    TEST_ONLY_PROVIDERS,
    simulator_url,
)

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") in _LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or address.is_unspecified or bool(mapped and mapped.is_loopback)


def _same_origin(url: str, base: str) -> bool:
    one, other = urlsplit(url), urlsplit(base)
    return bool(other.hostname) and (one.hostname, one.port) == (other.hostname, other.port)


def _at_endpoint(url: str, endpoint: str) -> bool:
    """`url` is `endpoint` or below it (same scheme and host, path under the endpoint's)."""
    one, other = urlsplit(url.strip()), urlsplit(endpoint)
    path, prefix = one.path.rstrip("/"), other.path.rstrip("/")
    return (one.scheme.lower(), one.hostname, one.port) == (
        other.scheme, other.hostname, other.port) and (path == prefix or path.startswith(
            prefix + "/"))


def _test_mode_codes() -> list[str]:
    """What routing treats as test mode: every enabled provider that is not live (whatever
    PROVIDERS_TEST says; start-up already made the two agree in production)."""
    live = set(settings.PROVIDERS_LIVE)
    return [code for code in settings.PROVIDERS_ENABLED if code in ENVIRONMENT and code not in live]


def _live_codes() -> list[str]:
    return [code for code in settings.PROVIDERS_LIVE
            if code in ENVIRONMENT and code not in TEST_ONLY_PROVIDERS]


def _secrets(code: str) -> dict[str, str]:
    """Variable name → value of every credential and secret (not the endpoint) of `code`."""
    config = (settings.PROVIDERS or {}).get(code, {})
    return {name: str(config.get(key, "")) for key, (name, _) in ENVIRONMENT[code].items()
            if key != "base_url" and config.get(key)}


@register(deploy=True)
def check_provider_credentials(app_configs: Any, **kwargs: Any) -> list[Error]:
    """Any credential or secret equal to one of the simulator's (they are in the repository, so
    anyone could sign a webhook or call as us with them)."""
    errors = []
    for code, config in (settings.PROVIDERS or {}).items():
        for key, (name, _) in ENVIRONMENT.get(code, {}).items():
            if key != "base_url" and config.get(key) == DEV_CREDENTIALS[name]:
                errors.append(Error(
                    f"{name} is the development value that lives in the repository.",
                    hint=f"Set {name} to the credential {code} issued for this deployment.",
                    id="providers.E001"))
    live_values = {value: name for code in _live_codes()
                   for name, value in _secrets(code).items()}
    for code in _test_mode_codes():
        for name, value in _secrets(code).items():
            if value in live_values:
                errors.append(Error(
                    f"{code} is in test mode but {name} is the same value as "
                    f"{live_values[value]} of a live provider.",
                    hint=f"Give {code} its sandbox credentials, or list it in PROVIDERS_LIVE.",
                    id="providers.E005"))
    return errors


@register(deploy=True)
def check_live_providers(app_configs: Any, **kwargs: Any) -> list[Error]:
    """A live provider must be the real one: https, not on this machine, not the simulator;
    the sandbox is never live; and a test-mode provider never points where real money moves
    (its acquirer's production endpoint or a live provider's), since sk_test_ payments would
    charge real cards there."""
    errors = []
    simulator = getattr(settings, "SIMULATOR_URL", "") or simulator_url({})
    for code in settings.PROVIDERS_LIVE:
        if code in TEST_ONLY_PROVIDERS:
            errors.append(Error(f"PROVIDERS_LIVE lists {code!r}, which is test-only.",
                                hint=f"Remove {code} from PROVIDERS_LIVE; it never takes live "
                                     "money.", id="providers.E003"))
            continue
        if code not in ENVIRONMENT:
            continue
        name = ENVIRONMENT[code]["base_url"][0]
        url = str((settings.PROVIDERS or {}).get(code, {}).get("base_url", ""))
        parts = urlsplit(url)
        if parts.scheme != "https" or _is_loopback(parts.hostname or "") or _same_origin(
                url, simulator):
            errors.append(Error(
                f"{code} is live but {name} ({url!r}) is the simulator, this machine or not "
                "https.", hint=f"Point {name} at {code}'s production https endpoint, or take "
                               f"{code} out of PROVIDERS_LIVE.", id="providers.E002"))
    errors.extend(_test_mode_at_production_endpoints())
    return errors


def _test_mode_at_production_endpoints() -> list[Error]:
    providers = settings.PROVIDERS or {}
    live_urls = {code: str(providers.get(code, {}).get("base_url", "")) for code in _live_codes()}
    errors = []
    for code in _test_mode_codes():
        name = ENVIRONMENT[code]["base_url"][0]
        url = str(providers.get(code, {}).get("base_url", ""))
        production = [endpoint for endpoint in PRODUCTION_ENDPOINTS.get(code, ())
                      if _at_endpoint(url, endpoint)]
        shared = [other for other, other_url in live_urls.items()
                  if other_url and _same_origin(url, other_url)]
        if production or shared:
            where = (f"{code}'s production endpoint" if production
                     else f"the endpoint of live provider {shared[0]}")
            errors.append(Error(
                f"{code} is in test mode but {name} ({url!r}) is {where}: test-mode payments "
                "would reach real money.",
                hint=f"Point {name} at {code}'s sandbox with sandbox credentials, or list "
                     f"{code} in PROVIDERS_LIVE (and take it out of PROVIDERS_TEST).",
                id="providers.E004"))
    return errors
