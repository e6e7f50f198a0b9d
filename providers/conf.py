"""Provider endpoints, credentials, HTTP timeouts and breaker tuning from the environment.

Django-free so `config/settings/base.py` can import it. The dev defaults point at the local
simulator (`python -m providers.simulator`, port 8100) and match its dev credentials; real
deployments set every `*_BASE_URL`, credential and secret in the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def providers_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, dict[str, Any]]:
    def get(name: str, default: str) -> str:
        return environ.get(name) or default

    simulator = get("SIMULATOR_URL", f"http://127.0.0.1:{get('SIMULATOR_PORT', '8100')}")
    # Dev-only defaults shared with the simulator; never valid at a real provider.
    return {
        "cielo": {
            "base_url": get("CIELO_BASE_URL", f"{simulator}/cielo"),
            "merchant_id": get("CIELO_MERCHANT_ID", "9d2d8b1e-5c8f-4f3e-9a57-000000c1e10a"),
            "merchant_key": get("CIELO_MERCHANT_KEY", "dev-cielo-merchant-key"),
            "webhook_secret": get("CIELO_WEBHOOK_SECRET", "whsec_dev_cielo"),
        },
        "rede": {
            "base_url": get("REDE_BASE_URL", f"{simulator}/rede"),
            "pv": get("REDE_PV", "10000001"),
            "token": get("REDE_TOKEN", "dev-rede-token"),
            "webhook_secret": get("REDE_WEBHOOK_SECRET", "whsec_dev_rede"),
        },
        "getnet": {
            "base_url": get("GETNET_BASE_URL", f"{simulator}/getnet"),
            "client_id": get("GETNET_CLIENT_ID", "dev-getnet-client"),
            "client_secret": get("GETNET_CLIENT_SECRET", "dev-getnet-client-secret"),
            "seller_id": get("GETNET_SELLER_ID", "6eb2412c-165a-41cd-b1d9-76c575d70a28"),
            "signing_secret": get("GETNET_SIGNING_SECRET", "dev-getnet-signing-secret"),
            "webhook_secret": get("GETNET_WEBHOOK_SECRET", "whsec_dev_getnet"),
        },
    }


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


PROVIDERS = providers_from_env()
PROVIDER_TIMEOUTS = timeouts_from_env()
PROVIDER_BREAKER = breaker_from_env()
