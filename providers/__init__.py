"""Payment providers behind one port. This package imports nothing from payments or ledger."""
