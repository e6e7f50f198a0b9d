"""The Celery application; tasks are discovered from each app's `tasks.py`."""

import os

from celery import Celery, signals
from kombu import Exchange, Queue

from config import observability
from core import metrics, queues

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("clearhouse")
app.config_from_object("django.conf:settings", namespace="CELERY")

# Queues by purpose, each served by its own worker (tools/run.py, docker-compose.yml): a flood
# of webhook retries to one merchant's dead endpoints cannot delay anyone's authorizations, and
# neither can delay the janitor that heals them.
QUEUES = queues.QUEUES  # providers, inbound, webhooks, reconciliation


def is_amqp(broker_url: str) -> bool:
    return str(broker_url or "").startswith(("amqp://", "amqps://", "pyamqp://"))


def task_queues(broker_url: str) -> tuple[Queue, ...]:
    """The queues as declared on `broker_url` (by the web when it publishes and by the worker
    when it consumes: both must declare them alike). On RabbitMQ they are durable quorum queues
    (replicated, and a message survives a broker restart) behind topic exchanges, which Celery's
    native delayed delivery needs for any countdown; other brokers ignore both."""
    if not is_amqp(broker_url):
        return tuple(Queue(name) for name in QUEUES)
    return tuple(Queue(name, Exchange(name, type="topic"), routing_key=name, durable=True,
                       queue_arguments={"x-queue-type": "quorum"}) for name in QUEUES)


def broker_options(broker_url: str, transport_options: dict | None) -> dict[str, object]:
    """The settings that depend on the broker's kind, laid over the configured ones."""
    if is_amqp(broker_url):
        # acks_late on RabbitMQ: a task whose worker lost its broker connection is redelivered
        # to another worker at once, so the first stops running it rather than both finishing.
        return {"worker_cancel_long_running_tasks_on_connection_loss": True}
    if str(broker_url or "").startswith(("redis://", "rediss://")):
        # A task taken by a worker that then died (SIGKILL, OOM) is handed out again after this
        # long, not after kombu's default hour; every task is idempotent, so an early
        # re-delivery of a slow one is harmless. (Redis-only: RabbitMQ needs no such option.)
        return {"broker_transport_options": {"visibility_timeout": 600,
                                             **(transport_options or {})}}
    return {}


app.conf.task_queues = task_queues(app.conf.broker_url)  # a worker without -Q takes all
app.conf.task_default_queue = "providers"
app.conf.update(broker_options(app.conf.broker_url, app.conf.broker_transport_options))
app.conf.task_routes = {
    "payments.tasks.*": {"queue": "providers"},
    "wallet.tasks.*": {"queue": "providers"},
    "webhooks.tasks.provider_event*": {"queue": "inbound"},
    "webhooks.tasks.webhook_deliver": {"queue": "webhooks"},
    # Beat's outbox sweep runs beside the deliveries it hands out, so a slow sweep never holds
    # up the janitor on the single reconciliation worker (an exact name wins over the globs).
    "reconciliation.tasks.webhooks_sweep": {"queue": "webhooks"},
    "reconciliation.tasks.*": {"queue": "reconciliation"},
    "backoffice.tasks.*": {"queue": "reconciliation"},
}


@app.on_after_configure.connect
def _filesystem_broker_dirs(sender: Celery, **kwargs: object) -> None:
    """kombu's filesystem transport needs its folders to exist before the first message."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if key in options:
            os.makedirs(options[key], exist_ok=True)


# Every task counted and timed in the worker (core/metrics.py; summed with the web's counters
# when PROMETHEUS_MULTIPROC_DIR is shared).
signals.task_prerun.connect(metrics.task_started, weak=False, dispatch_uid="clearhouse-task-start")
signals.task_postrun.connect(metrics.task_finished, weak=False, dispatch_uid="clearhouse-task-end")

# Tracing and Sentry in each pool process, after the fork (off unless configured).
signals.worker_process_init.connect(
    lambda **kwargs: observability.setup("clearhouse-worker"), weak=False,
    dispatch_uid="clearhouse-observability")

app.autodiscover_tasks()
