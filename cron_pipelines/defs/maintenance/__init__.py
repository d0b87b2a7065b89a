"""The ledger's health and the operators' alerts: what keeps the other jobs honest."""
