"""The Celery application; tasks are discovered from each app's `tasks.py`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("clearhouse")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _filesystem_broker_dirs(sender: Celery, **kwargs: object) -> None:
    """kombu's filesystem transport needs its folders to exist before the first message."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if key in options:
            os.makedirs(options[key], exist_ok=True)


app.autodiscover_tasks()
