"""The vocabulary every layer shares: service payloads, notifications, invalid records.

Layers point one way: models ← rules ← notifications ← resources ← defs ← cli.
"""
