"""`python -m providers.simulator --host 127.0.0.1 --port 8100`: run the simulator until Ctrl-C.

Credentials and webhook secrets come from the same environment variables as Clearhouse's
`providers/conf.py`, so one `.env` configures both sides of `make run`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from providers.simulator.server import start_simulator, stop_simulator

# environment variable → (provider, config path); the names match providers/conf.py.
ENVIRONMENT = {
    "CIELO_MERCHANT_ID": ("cielo", "credentials.merchant_id"),
    "CIELO_MERCHANT_KEY": ("cielo", "credentials.merchant_key"),
    "CIELO_WEBHOOK_SECRET": ("cielo", "webhook_secret"),
    "REDE_PV": ("rede", "credentials.pv"),
    "REDE_TOKEN": ("rede", "credentials.token"),
    "REDE_WEBHOOK_SECRET": ("rede", "webhook_secret"),
    "GETNET_CLIENT_ID": ("getnet", "credentials.client_id"),
    "GETNET_CLIENT_SECRET": ("getnet", "credentials.client_secret"),
    "GETNET_SELLER_ID": ("getnet", "credentials.seller_id"),
    "GETNET_SIGNING_SECRET": ("getnet", "credentials.signing_secret"),
    "GETNET_WEBHOOK_SECRET": ("getnet", "webhook_secret"),
}


def config_from_environment(environ: dict[str, str], webhook_base_url: str
                            ) -> dict[str, dict[str, Any]]:
    changes: dict[str, dict[str, Any]] = {code: {} for code in ("cielo", "rede", "getnet")}
    for name, (provider, path) in ENVIRONMENT.items():
        if environ.get(name):
            section, _, key = path.partition(".")
            if key:
                changes[provider].setdefault(section, {})[key] = environ[name]
            else:
                changes[provider][section] = environ[name]
    if webhook_base_url:
        for provider in changes:
            changes[provider]["webhook_url"] = f"{webhook_base_url.rstrip('/')}/{provider}/"
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m providers.simulator",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("SIMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SIMULATOR_PORT", 8100)))
    parser.add_argument("--seed", default=os.environ.get("SIMULATOR_SEED", "0"))
    parser.add_argument("--settlement-dir", type=Path,
                        default=os.environ.get("SIMULATOR_SETTLEMENT_DIR") or None)
    parser.add_argument("--state-file", type=Path,
                        default=os.environ.get("SIMULATOR_STATE_FILE") or None,
                        help="keep the books here across restarts (make run does)")
    parser.add_argument(
        "--webhook-base-url",
        default=os.environ.get(
            "SIMULATOR_WEBHOOK_BASE_URL",
            f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/webhooks/providers"),
        help="webhooks go to <base>/<provider>/; empty string sends none")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s simulator %(message)s")

    server, base_url = start_simulator(args.port, host=args.host, seed=str(args.seed),
                                       settlement_dir=args.settlement_dir,
                                       state_file=args.state_file)
    for provider, changes in config_from_environment(dict(os.environ),
                                                      args.webhook_base_url).items():
        server.simulator.configure(provider, changes)
    print(f"Provider simulator on {base_url} (seed {args.seed}); control API at "
          f"{base_url}/_control/health", flush=True)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    stop_simulator(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
