"""The notification ledger's protocol (docs/services.md, "The ledger"): claims, outcomes, attempts, the journal."""
