"""Deploy checks (`manage.py check --deploy`) for provider configuration: no development
credential of the repository, and neither the sandbox nor the simulator taking live traffic."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

from providers.conf import DEV_CREDENTIALS, ENVIRONMENT, TEST_ONLY_PROVIDERS, simulator_url

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
    return errors


@register(deploy=True)
def check_live_providers(app_configs: Any, **kwargs: Any) -> list[Error]:
    """A live provider must be the real one: https, not on this machine, not the simulator;
    and the sandbox is never live."""
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
    return errors
