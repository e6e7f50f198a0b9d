"""URL routes for deposits and payouts under /api/v1/."""

from django.urls import path

from wallet import api

urlpatterns = [
    path("deposits", api.DepositCollection.as_view()),
    path("deposits/<str:deposit_id>", api.DepositDetail.as_view()),
    path("payouts", api.PayoutCollection.as_view()),
    path("payouts/<str:payout_id>", api.PayoutDetail.as_view()),
]
