"""URL routes for deposits and payouts under /api/v1/."""

from core.api import resource_urls
from wallet import api

urlpatterns = [
    *resource_urls("deposits", "deposit_id", collection=api.DepositCollection,
                   detail=api.DepositDetail),
    *resource_urls("payouts", "payout_id", collection=api.PayoutCollection,
                   detail=api.PayoutDetail),
]
