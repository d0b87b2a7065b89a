"""Operators' alerts: a failed run, notifications stuck `claimed`, sent by mail and by webhook once each."""
