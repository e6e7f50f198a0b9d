"""URL routes for events and webhook endpoints under /api/v1/."""

from django.urls import path

from webhooks import api

urlpatterns = [
    path("events", api.EventCollection.as_view()),
    path("events/<str:event_id>", api.EventDetail.as_view()),
    path("events/<str:event_id>/resend", api.EventResend.as_view()),
    path("webhook_endpoints", api.WebhookEndpointCollection.as_view()),
    path("webhook_endpoints/<str:endpoint_id>", api.WebhookEndpointDetail.as_view()),
    path("webhook_endpoints/<str:endpoint_id>/rotate_secret",
         api.WebhookEndpointRotateSecret.as_view()),
    path("webhook_endpoints/<str:endpoint_id>/deliveries",
         api.WebhookEndpointDeliveries.as_view()),
]
