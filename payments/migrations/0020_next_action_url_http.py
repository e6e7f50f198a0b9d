"""3-D Secure: the provider's challenge page, handed to customers' browsers, is a web address
only (CHECK payment_next_action_url_http; payments.models.CHALLENGE_PAGE_SQL)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0003_api_versions'),
        ('payments', '0019_requires_action'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='payment',
            constraint=models.CheckConstraint(condition=models.Q(('next_action_url', ''), ('next_action_url__regex', '^https?://[^\\s/?#@\\\\"<>]+([/?#][^\\s\\\\"<>]*)?$'), _connector='OR'), name='payment_next_action_url_http'),
        ),
    ]
