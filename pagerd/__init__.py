"""pagerd: a self-hosted on-call pager."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pagerd")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
