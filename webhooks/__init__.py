"""Events (what happened), the transactional outbox and signed webhook delivery to merchants."""
