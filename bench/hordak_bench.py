"""The django-hordak side of scenario 3, run in its own process with `bench.hordak_settings`.

`setup` migrates hordak's database and creates the accounts; `run` measures transfers with the
same shapes and client counts as `bench.ledger` and prints the results as JSON. A transfer is
hordak's documented `Account.transfer_to` (one transaction row and two legs, checked to sum to
zero by hordak's trigger) inside `transaction.atomic()`. Hordak takes no account lock and keeps
no running balance (balances are sums over legs), so it does less than entry_post per transfer.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import django

from bench.clients import Operation, OperationFactory


def _ids() -> list[int]:
    from hordak.models import Account

    return list(Account.objects.order_by("pk").values_list("pk", flat=True))


def setup(payload: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command
    from hordak.models import Account

    call_command("migrate", verbosity=0, interactive=False)
    for index in range(payload["accounts"]):
        Account.objects.create(name=f"Bench {index}", code=f"{index:04d}",
                               type=Account.TYPES.asset, currencies=["USD"])
    return {"accounts": len(_ids())}


def _factory(ids: list[int], shape: str, tag: str) -> OperationFactory:
    def factory(index: int) -> Operation:
        from django.db import transaction
        from djmoney.money import Money
        from hordak.models import Account

        accounts = {a.pk: a for a in Account.objects.filter(pk__in=ids)}
        rng = random.Random(f"hordak-{tag}-{index}")

        def transfer(sequence: int) -> None:
            if shape == "hot":
                source, target = rng.choice(ids[1:]), ids[0]
            else:
                source, target = rng.sample(ids, 2)
            with transaction.atomic():
                accounts[source].transfer_to(accounts[target],
                                             Money(rng.randint(1, 10_000) / 100, "USD"),
                                             description=f"{tag}-{index}-{sequence}")

        return transfer

    return factory


def run(payload: dict[str, Any]) -> dict[str, Any]:
    from bench.clients import run_clients

    ids = _ids()
    results = {}
    for config in payload["configs"]:
        key = f"{config['shape']}@{config['clients']}"
        results[key] = run_clients(config["clients"], payload["seconds"], _factory(
            ids, config["shape"], f"{config['tag']}-{key}")).as_dict()
    return results


def main() -> None:
    django.setup()
    command = sys.argv[1]
    payload = json.load(sys.stdin)
    output = {"setup": setup, "run": run}[command](payload)
    json.dump(output, sys.stdout)


if __name__ == "__main__":
    main()
