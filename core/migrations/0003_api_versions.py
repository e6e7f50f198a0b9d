"""Merchants get a pinned API version: existing merchants the first dated version (the shapes
they integrated against), new ones the newest (core.versions.latest)."""

import core.versions
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0002_mode_guards'),
    ]

    operations = [
        migrations.AddField(
            model_name='merchant',
            name='api_version',
            field=models.CharField(default='2026-06-01', max_length=10),
        ),
        migrations.AlterField(
            model_name='merchant',
            name='api_version',
            field=models.CharField(default=core.versions.latest, max_length=10),
        ),
    ]
