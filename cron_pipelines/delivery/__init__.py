"""The delivery core: every notification goes claim, send, record, whatever its kind or channel.

One room per concern (docs/architecture.md):
- `pipeline`: the one delivery path, batch by batch, and how a run stops;
- `ledger/`: the claim and outcome protocol with mongo-service, its tokens, attempt rules and journal;
- `policies/`: what is decided before a claim (opt-outs, digests), each a step of one shape;
- `channels/`: how a notification reaches someone, one folder per channel (email, webhook);
- `stats`: the counts and samples a run reports.
No Dagster here, but for the journal's place in the run's event log.
"""
