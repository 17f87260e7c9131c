"""Monitoring tools' webhooks under ``/integrations``, translated into alert/ack/healthy."""

from __future__ import annotations

from aiohttp import web

from pagerd.config import Config


def add_integration_routes(app: web.Application, *, config: Config) -> None:
    """Add the ``/integrations`` routes; handlers find runtime and store in ``app[CONTEXT]``."""
