"""Reconciliation tuning: Django settings when defined, else the environment, else defaults.

Django-free at import so the data migration can read the beat intervals (like providers/conf.py).
Each name is also a Django setting; `config/settings/base.py` may define them with django-environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# name → (default, parser). Intervals are seconds; crontabs are "minute hour dom month dow" (UTC).
_SPEC: dict[str, tuple[Any, Any]] = {
    "RECON_JANITOR_INTERVAL_SECONDS": (300, int),
    # A `requested` attempt younger than this is probably still in the broker's queue.
    "RECON_JANITOR_GRACE_SECONDS": (60, int),
    # A claimed check is skipped by other janitors this long; it must outlast one batch of
    # provider lookups (each up to two calls bounded by the read timeout).
    "RECON_JANITOR_LEASE_SECONDS": (600, int),
    "RECON_MISSING_AFTER_DAYS": (2, int),
    "RECON_SETTLEMENT_PROVIDERS": (("cielo", "rede", "getnet"),
                                   lambda raw: tuple(p.strip() for p in raw.split(",") if p)),
    # Yesterday and the days before it are fetched again: a missed run heals itself, and a file
    # that did not change is a no-op (same checksum).
    "RECON_SETTLEMENT_LOOKBACK_DAYS": (3, int),
    "RECON_SETTLEMENTS_CRONTAB": ("0 6 * * *", str),
    "RECON_LEDGER_VERIFY_CRONTAB": ("30 2 * * *", str),
    # Signed checkpoints of the ledger's chain heads (ledger/checkpoints.py): what a table owner
    # changes after the newest one goes unseen until the next, so keep it short.
    "RECON_LEDGER_CHECKPOINT_INTERVAL_SECONDS": (300, int),
    "RECON_IDEMPOTENCY_REAP_CRONTAB": ("15 * * * *", str),
    "RECON_WEBHOOKS_SWEEP_INTERVAL_SECONDS": (30, int),
    # The dispute job: providers' decisions by lookup (each open dispute at most every
    # DISPUTE_LOOKUP_MINUTES) and the "evidence due soon" reminders.
    "RECON_DISPUTES_INTERVAL_SECONDS": (900, int),
    # Monthly history partitions (core.partitions): daily, so a missed run heals the next day,
    # three months ahead of need.
    "RECON_HISTORY_PARTITIONS_CRONTAB": ("40 3 * * *", str),
    "RECON_JOBRUN_RETENTION_DAYS": (90, int),
    # The bank leg (reconciliation/bank.py). A provider pays a settlement file's net within this
    # many days of the file's date, and a payout leaves the bank within this many days of its
    # creation; past that, a statement covering the day without the money opens a break.
    "RECON_BANK_DEPOSIT_WINDOW_DAYS": (5, int),
    "RECON_BANK_PAYOUT_WINDOW_DAYS": (3, int),
    # How each provider appears in bank counterparty names / remittance text, besides its code:
    # "cielo=CIELO SA|CIELO PAGAMENTOS;rede=REDECARD".
    "RECON_BANK_PROVIDER_NAMES": ({}, lambda raw: {
        code.strip(): tuple(n.strip() for n in names.split("|") if n.strip())
        for code, _, names in (part.partition("=") for part in raw.split(";") if part.strip())}),
    # The bank account's mode: live money reconciles only live payouts and live providers'
    # settlements; a test statement (development, demo, tests) only test ones. Never both.
    "RECON_BANK_LIVEMODE": (True, lambda raw: raw.strip().lower() in ("1", "true", "yes")),
}


def from_env(name: str, environ: Mapping[str, str] = os.environ) -> Any:
    default, parse = _SPEC[name]
    raw = environ.get(name)
    return parse(raw) if raw not in (None, "") else default


def setting(name: str) -> Any:
    """The Django setting if the project defines it, else the environment or the default."""
    from django.conf import settings

    if name not in _SPEC:
        raise KeyError(f"unknown reconciliation setting {name!r}")
    value = getattr(settings, name, None)
    return from_env(name) if value is None else value
