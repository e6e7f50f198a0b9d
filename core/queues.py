"""How many task messages wait in each Celery queue (config/celery_app.py QUEUES), read from the
broker; shared by /metrics and the back-office dashboard. A broker that does not answer gives
None for every queue rather than an error (the health check reports the broker itself)."""

from __future__ import annotations

import logging

from celery import current_app

logger = logging.getLogger(__name__)
QUEUES = ("providers", "inbound", "webhooks", "reconciliation")


def queue_depths(*, timeout: float = 1.0) -> dict[str, int | None]:
    depths: dict[str, int | None] = dict.fromkeys(QUEUES)
    try:
        with current_app.connection_for_read(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            channel = conn.default_channel
            for name in QUEUES:
                try:
                    depths[name] = int(channel.queue_declare(queue=name, passive=True)
                                       .message_count)
                except Exception:  # a queue never declared yet holds nothing
                    depths[name] = 0
    except Exception:
        logger.warning("queue depths: the broker did not answer")
    return depths
