"""Channels: how a notification reaches someone. One folder each, behind `base.Channel` and `base.Transport`."""
