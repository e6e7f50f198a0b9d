"""URL routes for balances under /api/v1/."""

from django.urls import path

from core.api import resource_urls
from ledger import api

urlpatterns = [
    path("balance", api.BalanceDetail.as_view()),
    path("balance/report", api.BalanceReport.as_view()),
    *resource_urls("balance_transactions", "posting_id",
                   collection=api.BalanceTransactionCollection,
                   detail=api.BalanceTransactionDetail),
    path("ledger/checkpoint", api.CheckpointDetail.as_view()),
]
