"""pagerd: a self-hosted on-call pager."""

# The one place the version is written: pyproject.toml reads it from here. A literal,
# so start-up does not import importlib.metadata to learn it.
__version__ = "0.1.0"
