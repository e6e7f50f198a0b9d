"""Wallet movements: deposits (money in) and payouts (money out), their states and their API."""
