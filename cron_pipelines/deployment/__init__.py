"""What a production instance adds to Dagster's defaults (configured in deploy/dagster.yaml)."""
