"""What the project tells operators besides run metadata: JSON log lines and Prometheus metrics."""
