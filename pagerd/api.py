"""The JSON API under ``/api/v1`` (CONTRACT §4)."""

from __future__ import annotations

from aiohttp import web

from pagerd.config import Config


def add_api_routes(app: web.Application, *, config: Config) -> None:
    """Add the ``/api/v1`` routes; handlers find runtime, store and clock in ``app[CONTEXT]``."""
