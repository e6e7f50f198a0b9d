"""Root URL configuration: the API under /api/v1/, docs, health checks and the admin."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from core import health, reference
from core.metrics import metrics_view
from payments.api import authentication_return
from webhooks.api import provider_webhook

urlpatterns = [
    path("api/v1/", include("payments.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/v1/", include("ledger.urls")),
    path("api/v1/", include("wallet.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/errors", reference.errors_page, name="error-codes"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("webhooks/providers/<str:code>/", provider_webhook, name="provider-webhook"),
    # The customer's browser, back from a 3-D Secure challenge (no API key: a per-attempt token).
    path("payments/authentication/<str:attempt_id>/<str:token>", authentication_return,
         name="payment-authentication-return"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("readyz", health.readyz, name="readyz"),
    path(settings.ADMIN_URL, admin.site.urls),
]

if settings.BENCH_ENDPOINTS:  # `make bench` only: the constant baseline endpoint (bench/urls.py)
    urlpatterns.append(path("api/v1/bench/", include("bench.urls")))
