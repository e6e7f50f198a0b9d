"""Data: beat runs the dispute job (provider lookups of open disputes, evidence reminders)
every RECON_DISPUTES_INTERVAL_SECONDS: its row as `recon_schedule --sync` writes it."""

from django.db import migrations

NAME = "recon-disputes"


def forwards(apps, schema_editor):
    from django.utils import timezone

    from reconciliation.services import schedule_sync

    schedule_sync(names={NAME}, models={
        name: apps.get_model("django_celery_beat", name)
        for name in ("PeriodicTask", "IntervalSchedule", "CrontabSchedule")})
    apps.get_model("django_celery_beat", "PeriodicTasks").objects.update_or_create(
        ident=1, defaults={"last_update": timezone.now()})


def backwards(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0009_bank_statements"),
        ("payments", "0010_dispute_evidence_files"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
