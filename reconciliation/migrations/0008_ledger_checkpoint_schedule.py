"""Data: beat signs a ledger checkpoint every RECON_LEDGER_CHECKPOINT_INTERVAL_SECONDS."""

from django.db import migrations

from reconciliation.conf import from_env

NAME = "ledger-checkpoint"


def forwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    from django.utils import timezone

    every = int(from_env("RECON_LEDGER_CHECKPOINT_INTERVAL_SECONDS"))
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
    PeriodicTask.objects.update_or_create(name=NAME, defaults={
        "task": "reconciliation.tasks.ledger_checkpoint",
        "description": "Sign and export a checkpoint of every ledger account's chain head.",
        "enabled": True, "interval": interval, "crontab": None, "expire_seconds": every})
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def backwards(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0007_janitor_never_expires"),
        ("ledger", "0003_account_chains"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
