"""URL routes for balances under /api/v1/."""

from django.urls import path

from ledger import api

urlpatterns = [
    path("balance", api.BalanceDetail.as_view()),
    path("balance/report", api.BalanceReport.as_view()),
    path("balance_transactions", api.BalanceTransactionCollection.as_view()),
    path("balance_transactions/<str:posting_id>", api.BalanceTransactionDetail.as_view()),
    path("ledger/checkpoint", api.CheckpointDetail.as_view()),
]
