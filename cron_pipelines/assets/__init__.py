"""The lineage an auditor reads: the services' data as external assets, feeding the
assets each job materializes (one per business outcome, summary metadata only)."""
