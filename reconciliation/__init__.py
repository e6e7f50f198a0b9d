"""Reconciliation: the janitor for stuck payments, settlement import and matching, breaks."""
