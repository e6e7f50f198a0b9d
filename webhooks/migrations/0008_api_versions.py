"""Events record the API version their data was built in, and endpoints the version they
deliver in. Rows already there were built and subscribed under the first dated version."""

import core.versions
from django.db import migrations, models


def _pinned(model_name):
    return [
        migrations.AddField(model_name=model_name, name='api_version',
                            field=models.CharField(default='2026-06-01', max_length=10)),
        migrations.AlterField(model_name=model_name, name='api_version',
                              field=models.CharField(default=core.versions.latest,
                                                     max_length=10)),
    ]


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0007_events_partitioned'),
    ]

    operations = [*_pinned('event'), *_pinned('webhookendpoint')]
