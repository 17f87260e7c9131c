"""The HTTP server: health, readiness and metrics, acknowledge links, the console."""
