"""The operations console: roles, maker-checker approvals, the staff audit log, the dashboard."""
