"""Data: beat creates the coming months' history partitions (core.partitions) daily, at
RECON_HISTORY_PARTITIONS_CRONTAB: its row as `recon_schedule --sync` writes it."""

from django.db import migrations

NAME = "history-partitions"
BEAT_MODELS = ("PeriodicTask", "IntervalSchedule", "CrontabSchedule")


def forwards(apps, schema_editor):
    from django.utils import timezone

    from reconciliation.services import schedule_sync

    models = {name: apps.get_model("django_celery_beat", name) for name in BEAT_MODELS}
    schedule_sync(names={NAME}, models=models)
    beat_changed = apps.get_model("django_celery_beat", "PeriodicTasks")
    beat_changed.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def backwards(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0010_dispute_schedule"),
        ("webhooks", "0007_events_partitioned"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
