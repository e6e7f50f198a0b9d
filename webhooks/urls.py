"""URL routes for events under /api/v1/."""

from django.urls import path

from webhooks import api

urlpatterns = [
    path("events", api.EventCollection.as_view()),
    path("events/<str:event_id>", api.EventDetail.as_view()),
]
