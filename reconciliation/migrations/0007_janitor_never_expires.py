"""The janitor's beat row loses its expiry: it is single-flight by an advisory lock instead."""

from django.db import migrations


def forwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name="recon-janitor").update(expire_seconds=None, expires=None)


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0006_provider_conflict_breaks"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
