"""Double-entry ledger: accounts, journal entries, immutable postings, enforced by PostgreSQL."""
