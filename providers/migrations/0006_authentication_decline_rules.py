"""Default decline rules for the 3-D Secure codes (the test that every normalised code has one
caught them missing): a failed challenge is the cardholder's refusal, never retried anywhere; an
abandoned one is not retried by us (the customer may pay again, on session)."""

from django.db import migrations

SEED = {
    "authentication_failed": "hard_decline",
    "authentication_abandoned": "do_not_retry",
}


def seed(apps, schema_editor):
    rule = apps.get_model("providers", "DeclineRule")
    for code, meaning in SEED.items():
        rule.objects.get_or_create(provider="", code=code, defaults={"meaning": meaning})


class Migration(migrations.Migration):
    dependencies = [("providers", "0005_decline_rules_seed")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
