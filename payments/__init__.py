"""Payments and refunds: the state machine, the services that move it, and the API."""
