"""pagerd: a self-hosted on-call pager."""

# The one place the version is written: pyproject.toml reads it from here. A literal
# rather than importlib.metadata, whose import alone took ~90 ms of every start-up.
__version__ = "0.1.0"
