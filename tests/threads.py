"""Threads released together, each with its own database connection: the tests' way to race
two or more callers for one row, lock or lease."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_threads(count: int, work: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """`work(i)` on `count` threads released together, each with its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results.append(work(i))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (a deadlock?)"
    return results, errors
