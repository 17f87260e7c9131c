"""Structured logs and Prometheus metrics, shared by every layer but the core."""
