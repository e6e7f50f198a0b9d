"""Data: beat's schedule for the scheduled jobs, as django-celery-beat rows editable in the admin.

Frozen here as it was when written (later changes go through `manage.py recon_schedule --sync`
or a new migration). Intervals and crontabs read RECON_* from the environment at migrate time,
so a demo can shorten the janitor's interval (RECON_JANITOR_INTERVAL_SECONDS=5 make run).
"""

from django.db import migrations

from reconciliation.conf import from_env

JOBS = [
    # name, task, description, interval env (seconds) or crontab env, expires with interval
    ("recon-janitor", "reconciliation.tasks.recon_janitor",
     "Ask providers about stuck payments and refunds (5 min, 1 h, daily ×5).",
     "RECON_JANITOR_INTERVAL_SECONDS", True),
    ("recon-settlements", "reconciliation.tasks.recon_settlements",
     "Import and match each provider's settlement files.", "RECON_SETTLEMENTS_CRONTAB", False),
    ("ledger-verify", "reconciliation.tasks.ledger_verify_nightly",
     "Prove the ledger consistent; opens a break on failure.", "RECON_LEDGER_VERIFY_CRONTAB",
     False),
    ("idempotency-reap", "reconciliation.tasks.idempotency_reap",
     "Delete idempotency keys past their TTL; prune old job runs.",
     "RECON_IDEMPOTENCY_REAP_CRONTAB", False),
    # The name config/settings/base.py's code-defined entry used: beat updates this row by
    # name instead of adding a second sweeper while that entry still exists.
    ("webhooks-sweep", "reconciliation.tasks.webhooks_sweep",
     "Send due webhook deliveries (retries and lost first tries).",
     "RECON_WEBHOOKS_SWEEP_INTERVAL_SECONDS", True),
]
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def create_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    from django.utils import timezone

    for name, task, description, env_name, expires in JOBS:
        defaults = {"task": task, "description": description, "enabled": True,
                    "interval": None, "crontab": None, "expire_seconds": None}
        if env_name.endswith("_SECONDS"):
            every = int(from_env(env_name))
            defaults["interval"], _ = IntervalSchedule.objects.get_or_create(
                every=every, period="seconds")
            if expires:
                defaults["expire_seconds"] = every
        else:
            fields = dict(zip(CRON_FIELDS, from_env(env_name).split(), strict=True))
            defaults["crontab"], _ = CrontabSchedule.objects.get_or_create(timezone="UTC",
                                                                           **fields)
        PeriodicTask.objects.update_or_create(name=name, defaults=defaults)
    # Historical models send no signals: tell a running beat that its schedule changed.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[job[0] for job in JOBS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
