"""Where the time goes: a pyinstrument profile of each scenario's measured path, in-process.

Each profile runs the same service calls the scenario measures, single-threaded (so the call
tree is the whole story, not a thread waiting on a pool), and writes pyinstrument's text tree to
bench/results/profiles/<date>/<scenario>.txt. docs/BENCHMARKS.md reads them into prose. Skipped
when pyinstrument is missing (it belongs to the bench dependency group).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from bench.runtime import RESULTS_DIR

API_REQUESTS = 150
LEDGER_TRANSFERS = 300
OUTBOX_DELIVERIES = 1000
SETTLEMENT_LINES = 10_000


def _profile(name: str, out_dir: Path, work: Callable[[], object]) -> str:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        work()
    finally:
        profiler.stop()  # a sampler left running crashes the interpreter's exit
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    # Paths relative to the checkout, so a committed profile names no machine's folders.
    text = text.replace(str(Path(__file__).resolve().parent.parent) + "/", "")
    path = out_dir / f"{name}.txt"
    path.write_text(text)
    return str(path.relative_to(RESULTS_DIR.parent.parent))


def _api() -> None:
    """create+confirm through the whole Django stack (test client, no gunicorn). The broker is
    in-memory here; gunicorn's filesystem broker adds a file write per confirm."""
    import secrets

    from django.test import Client

    from core.services import merchant_create

    _, issued = merchant_create(name="Bench profile merchant")
    client = Client(SERVER_NAME="localhost", HTTP_AUTHORIZATION=f"Bearer {issued.raw_key}")
    for index in range(API_REQUESTS):
        response = client.post("/api/v1/payments", data=json.dumps({
            "amount": 1000 + index, "currency": "usd", "payment_method": "pm_card_visa",
            "confirm": True}), content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=f"profile-{secrets.token_urlsafe(18)}")
        if response.status_code != 202:
            raise RuntimeError(f"profile create answered {response.status_code}")


def _ledger() -> Callable[[], None]:
    from bench.ledger import ENTRY_KIND, REFERENCE_TYPE, accounts_create
    from ledger.models import Account
    from ledger.services import entry_post

    ids = accounts_create(50)
    accounts = {a.pk: a for a in Account.objects.filter(pk__in=ids)}
    rng = random.Random("profile")

    def work() -> None:
        for index in range(LEDGER_TRANSFERS):
            source, target = rng.sample(ids, 2)
            entry_post(kind=ENTRY_KIND, lines=[(accounts[source], -100), (accounts[target], 100)],
                       reference_type=REFERENCE_TYPE, reference_id=f"profile-{index}")

    return work


def _outbox() -> tuple[Callable[[], None], Callable[[], None]]:
    from bench.outbox import ReceiverProcess, _events_record
    from core.services import merchant_create
    from webhooks.services import delivery_sweep, endpoint_create

    merchant, _ = merchant_create(name="Bench profile outbox merchant")
    receiver = ReceiverProcess().__enter__()
    issued = endpoint_create(merchant=merchant, url=receiver.url,
                             enabled_events=["payment.captured"])
    receiver.command(f"secret {issued.secret}")
    _events_record(merchant, issued.endpoint.pk, OUTBOX_DELIVERIES, "profile")

    def work() -> None:
        delivery_sweep(concurrency=1)  # one thread: the HTTP shows up in the same tree

    return work, lambda: receiver.__exit__(None, None, None)


def _settlement(work_dir: Path) -> Callable[[], None]:
    from bench.settlement import PROVIDER, fixture_create
    from reconciliation.settlements import settlement_import

    path = work_dir / "settlement-profile.csv"
    day = date(2025, 2, 1)
    fixture_create(lines=SETTLEMENT_LINES, tag="profile", path=path, file_day=day)

    def work() -> None:
        with path.open("rb") as handle:
            settlement_import(provider=PROVIDER, file_date=day, content=handle)

    return work


def run(stamp: str, work_dir: Path, scenarios: set[str]) -> dict[str, Any]:
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        return {"skipped": "pyinstrument is not installed (bench dependency group)"}
    out_dir = RESULTS_DIR / "profiles" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    if "api" in scenarios:
        written["api"] = _profile("api-create-confirm", out_dir, _api)
    if "ledger" in scenarios:
        written["ledger"] = _profile("ledger-entry-post", out_dir, _ledger())
    if "outbox" in scenarios:
        work, close = _outbox()
        try:
            written["outbox"] = _profile("outbox-delivery-sweep", out_dir, work)
        finally:
            close()
    if "settlement" in scenarios:
        written["settlement"] = _profile("settlement-import", out_dir, _settlement(work_dir))
    return written
