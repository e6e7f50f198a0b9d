"""Refunds by the provider's reference: settlement matching and provider webhooks look them up."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('payments', '0005_payment_list_indexes'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='refund',
            index=models.Index(fields=['provider_reference'], name='refund_provider_reference'),
        ),
    ]
