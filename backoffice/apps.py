"""App configs: the back-office app, and django.contrib.admin with our site as `admin.site`."""

from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back-office"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backoffice.roles import roles_sync_after_migrate

        # The data migration creates the roles; this keeps their permissions complete when an
        # app migrated later adds models, and recreates them after a test database flush.
        post_migrate.connect(roles_sync_after_migrate, sender=self,
                             dispatch_uid="backoffice.roles_sync")


class BackofficeAdminConfig(admin_apps.AdminConfig):
    """`django.contrib.admin`, with `admin.site` being the back-office site (2FA, dashboard)."""

    default = False
    default_site = "backoffice.site.BackofficeAdminSite"
