"""URL routes for events and webhook endpoints under /api/v1/."""

from core.api import resource_urls
from webhooks import api

urlpatterns = [
    *resource_urls("events", "event_id", collection=api.EventCollection,
                   detail=api.EventDetail, resend=api.EventResend),
    *resource_urls("webhook_endpoints", "endpoint_id", collection=api.WebhookEndpointCollection,
                   detail=api.WebhookEndpointDetail,
                   rotate_secret=api.WebhookEndpointRotateSecret,
                   deliveries=api.WebhookEndpointDeliveries),
]
