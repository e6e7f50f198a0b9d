"""Seed the decline rules from the codes `providers/errors.py` held when they became data: its
`retryable` codes fail over to the next provider; the issuer's "not now" answers are soft
declines; what the card itself rules out is hard; everything else is never retried."""

from django.db import migrations

# A frozen copy: later edits happen through approved back-office changes, not here.
SEED = {
    "card_declined": "soft_decline",
    "insufficient_funds": "soft_decline",
    "do_not_honor": "soft_decline",
    "expired_card": "hard_decline",
    "fraud_suspected": "hard_decline",
    "invalid_payment_method": "hard_decline",
    "issuer_unavailable": "retry_other_provider",
    "processing_error": "retry_other_provider",
    "provider_unavailable": "retry_other_provider",
    "provider_authentication_failed": "retry_other_provider",
    "payment_method_not_enrolled": "retry_other_provider",
    "timeout": "do_not_retry",
    "outcome_unknown": "do_not_retry",
    "invalid_request": "do_not_retry",
    "not_found": "do_not_retry",
    "invalid_state": "do_not_retry",
    "idempotency_conflict": "do_not_retry",
}


def seed(apps, schema_editor):
    rule = apps.get_model("providers", "DeclineRule")
    for code, meaning in SEED.items():
        rule.objects.get_or_create(provider="", code=code, defaults={"meaning": meaning})


class Migration(migrations.Migration):
    dependencies = [("providers", "0004_decline_rules")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
