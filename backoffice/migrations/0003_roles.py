"""The four roles (viewer, operator, approver, admin) as groups with explicit permissions.

Permissions are normally created after all migrations (post_migrate); they are created here
first so the groups can hold them. Apps migrated after this one get theirs from the same
`roles_sync` on post_migrate (backoffice.apps).
"""

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

from backoffice.roles import roles_sync


def forwards(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True  # historical configs lack it; the creators need it
        create_contenttypes(app_config, verbosity=0, apps=apps)
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    roles_sync(apps)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(
        name__in=["viewer", "operator", "approver", "admin"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("backoffice", "0002_audit_append_only"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("core", "0001_initial"),
        ("payments", "0004_dispute_triggers"),
        ("ledger", "0002_ledger_triggers"),
        ("webhooks", "0003_provider_inbox"),
        ("providers", "0002_routing_and_breakers"),
        ("otp_totp", "__first__"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
