"""How every job is built: the daily job and its schedule, and the one notification-asset factory."""
