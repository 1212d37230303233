"""Metrics (OpenTelemetry, exported for Prometheus and over OTLP) and traces."""
