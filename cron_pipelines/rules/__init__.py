"""The business rules of docs/services.md as pure functions: dates, records and policies in,
notifications and service actions (with their idempotency keys) out. No Dagster, no I/O."""
