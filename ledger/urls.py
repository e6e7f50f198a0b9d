"""URL routes for balances under /api/v1/ (filled in by the ledger work)."""

urlpatterns: list = []
