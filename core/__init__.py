"""Cross-cutting building blocks: money, ids, errors, auth, idempotency, pagination, request ids."""
