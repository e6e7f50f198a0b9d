"""URL routes for payments and refunds under /api/v1/."""

from django.urls import path

from payments import api

urlpatterns = [
    path("payments", api.PaymentCollection.as_view()),
    path("payments/<str:payment_id>", api.PaymentDetail.as_view()),
    path("payments/<str:payment_id>/confirm", api.PaymentConfirm.as_view()),
    path("payments/<str:payment_id>/capture", api.PaymentCapture.as_view()),
    path("payments/<str:payment_id>/cancel", api.PaymentCancel.as_view()),
    path("refunds", api.RefundCollection.as_view()),
    path("refunds/<str:refund_id>", api.RefundDetail.as_view()),
    path("disputes", api.DisputeCollection.as_view()),
    path("disputes/<str:dispute_id>", api.DisputeDetail.as_view()),
    path("disputes/<str:dispute_id>/close", api.DisputeClose.as_view()),
    path("disputes/<str:dispute_id>/submit", api.DisputeSubmit.as_view()),
    path("files", api.FileCollection.as_view()),
    path("files/<str:file_id>", api.FileDetail.as_view()),
    path("files/<str:file_id>/contents", api.FileContents.as_view()),
]
