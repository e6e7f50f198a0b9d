"""The janitor also tracks payouts and deposits (the wallet app), which have no attempt id here."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('reconciliation', '0003_settlement_file_chunks'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='reconciliationcheck',
            name='recon_check_object_type_known',
        ),
        migrations.AlterField(
            model_name='reconciliationcheck',
            name='attempt_id',
            field=models.CharField(blank=True, default='', help_text='The attempt without an answer (payments, refunds).', max_length=40),
        ),
        migrations.AlterField(
            model_name='reconciliationcheck',
            name='object_type',
            field=models.CharField(choices=[('payment', 'Payment'), ('refund', 'Refund'), ('payout', 'Payout'), ('deposit', 'Deposit')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='reconciliationcheck',
            constraint=models.CheckConstraint(condition=models.Q(('object_type__in', ['payment', 'refund', 'payout', 'deposit'])), name='recon_check_object_type_known'),
        ),
    ]
