"""Benchmarks: the send path at scale, measured end to end (see README, "Performance")."""
