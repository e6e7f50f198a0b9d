"""Management commands of the webhooks app (webhooks_sweep)."""
