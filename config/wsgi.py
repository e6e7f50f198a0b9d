"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

from config import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
observability.setup("clearhouse-web")  # tracing and Sentry, when configured
application = get_wsgi_application()
