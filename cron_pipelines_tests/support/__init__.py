"""Real peers for the tests (and the benchmark): an SMTP server, certificates."""
