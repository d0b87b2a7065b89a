"""The ops-alert webhook (contract §9): a Slack-compatible JSON POST, signed, for alerts that must not need the mail server."""
