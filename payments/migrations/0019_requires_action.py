"""3-D Secure: the `requires_action` state (authorization_requested → requires_action →
authorized | captured | failed) in the status trigger, and the challenge's fields."""

from importlib import import_module

import django_fsm
from django.db import migrations, models

# payments.models.PAYMENT_TRANSITIONS as of this migration: 0002's table and the 3-D Secure
# steps. The trigger function of 0002 is replaced with the same body over the new table (and
# put back by the reverse).
_0002 = import_module("payments.migrations.0002_money_triggers")
_BEFORE = _0002._ALLOWED
_ALLOWED = _BEFORE + (
    ", ('authorization_requested','requires_action'), ('requires_action','authorized'), "
    "('requires_action','captured'), ('requires_action','failed')"
)


def _guard(allowed: str) -> str:
    """0002's `payments_payment_guard_status()` over the table `allowed`."""
    function = _0002.SQL[:_0002.SQL.index("CREATE TRIGGER payments_payment_guard_status")]
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
        _BEFORE, allowed)


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0003_api_versions'),
        ('payments', '0018_multicapture_and_increments'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='payment',
            name='payment_status_known',
        ),
        migrations.AddField(
            model_name='payment',
            name='action_expires_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='payment',
            name='next_action_url',
            field=models.CharField(blank=True, db_default='', default='', max_length=2048),
        ),
        migrations.AddField(
            model_name='payment',
            name='return_url',
            field=models.CharField(blank=True, db_default='', default='', max_length=2048),
        ),
        migrations.AlterField(
            model_name='payment',
            name='status',
            field=django_fsm.FSMField(choices=[('created', 'Created'), ('authorization_requested', 'Authorization Requested'), ('requires_action', 'Requires Action'), ('authorized', 'Authorized'), ('captured', 'Captured'), ('settled', 'Settled'), ('refunded', 'Refunded'), ('charged_back', 'Charged Back'), ('failed', 'Failed'), ('canceled', 'Canceled')], default='created', max_length=32, protected=True),
        ),
        migrations.AddIndex(
            model_name='payment',
            index=models.Index(condition=models.Q(('status', 'requires_action')), fields=['action_expires_at'], name='payment_action_expiry'),
        ),
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['created', 'authorization_requested', 'requires_action', 'authorized', 'captured', 'settled', 'refunded', 'charged_back', 'failed', 'canceled'])), name='payment_status_known'),
        ),
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('action_expires_at__isnull', False), ('next_action_url__gt', ''), ('status', 'requires_action')), models.Q(models.Q(('status', 'requires_action'), _negated=True), ('action_expires_at__isnull', True), ('next_action_url', '')), _connector='OR'), name='payment_next_action_iff_requires_action'),
        ),
        migrations.RunSQL(_guard(_ALLOWED), _guard(_BEFORE)),
    ]
