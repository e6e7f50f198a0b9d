"""Fixed-window use counters kept in PostgreSQL (core.ratelimit.hit), for the limits that must
hold when Redis is absent: the 3-D Secure return address's provider lookups."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0003_api_versions'),
    ]

    operations = [
        migrations.CreateModel(
            name='RateWindow',
            fields=[
                ('key', models.CharField(max_length=200, primary_key=True, serialize=False)),
                ('count', models.PositiveIntegerField(default=0)),
                ('expires_at', models.DateTimeField(db_index=True)),
            ],
        ),
    ]
