"""Two things every service does around its transaction: hand work to a Celery task once the
transaction has committed, and insert a row whose unique constraint a concurrent twin may win."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)
T = TypeVar("T")


def task_send(task: str, *args: Any, what: str, fallback: str) -> bool:
    """Enqueue the Celery task at dotted path `task` now. A broker error is logged and swallowed:
    the work is committed and `fallback` (a sweeper, the janitor) finds it without the message.
    The task is named by its path so a service never imports its own tasks module."""
    try:
        import_string(task).delay(*args)
    except Exception:
        logger.exception("could not enqueue %s; %s", what, fallback)
        return False
    return True


def task_send_on_commit(task: str, *args: Any, what: str, fallback: str) -> None:
    """`task_send` after the current transaction commits (never for a rolled-back change)."""
    transaction.on_commit(
        functools.partial(task_send, task, *args, what=what, fallback=fallback), robust=True)


def create_or_existing(create: Callable[[], T], existing: Callable[[], T | None]) -> T:
    """Run `create` (it owns its transaction); when a unique constraint refuses it, return the
    row a concurrent or earlier twin made, found by `existing`. Re-raises when there is none:
    then the IntegrityError was about something else."""
    try:
        return create()
    except IntegrityError:
        found = existing()
        if found is None:
            raise
        return found
