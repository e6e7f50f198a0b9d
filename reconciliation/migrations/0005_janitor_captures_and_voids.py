"""The janitor also tracks capture and void attempts left without an answer (one check each)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('reconciliation', '0004_janitor_movements'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='reconciliationcheck',
            name='recon_check_object_type_known',
        ),
        migrations.AlterField(
            model_name='reconciliationcheck',
            name='attempt_id',
            field=models.CharField(blank=True, default='', help_text='The attempt without an answer (payments, refunds, captures and voids).', max_length=40),
        ),
        migrations.AlterField(
            model_name='reconciliationcheck',
            name='object_type',
            field=models.CharField(choices=[('payment', 'Payment'), ('refund', 'Refund'), ('payout', 'Payout'), ('deposit', 'Deposit'), ('capture_or_void', 'Capture or void')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='reconciliationcheck',
            constraint=models.CheckConstraint(condition=models.Q(('object_type__in', ['payment', 'refund', 'payout', 'deposit', 'capture_or_void'])), name='recon_check_object_type_known'),
        ),
    ]
