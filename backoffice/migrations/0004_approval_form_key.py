"""One approval request per submitted form: a double click above the threshold finds the first."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('backoffice', '0003_roles'),
        ('core', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='approvalrequest',
            name='form_key',
            field=models.CharField(blank=True, default='', help_text='The one-time key of the form that asked for it: a double click or a re-posted form finds this request instead of making a second one.', max_length=64),
        ),
        migrations.AddConstraint(
            model_name='approvalrequest',
            constraint=models.UniqueConstraint(condition=models.Q(('form_key', ''), _negated=True), fields=('form_key',), name='approval_one_per_form'),
        ),
    ]
