"""The JSON API served in process on 127.0.0.1: a real Store, Runtime and aiohttp server.

The outbox and MQTT publisher are stand-ins that keep what they are given
(delivery is tested elsewhere); everything the API commits is in a real SQLite
file. ``threaded_site`` serves the same on its own event loop in a thread, for
synchronous clients such as schemathesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from pagerd.app import declared
from pagerd.config import Config
from pagerd.intake.api import add_api_routes
from pagerd.intake.integrations import add_integration_routes
from pagerd.runtime.catalogue import apply_declared
from pagerd.runtime.router import Runtime
from pagerd.store.sqlite import Store
from pagerd.web.acklinks import AckLinks
from tests.assembly import Assembly, assembled, serving, web_app
from tests.doubles import Recorder

TOKEN = "api-test-token-Zr8fN2qW6eK4pH7t"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class ApiSite:
    base: str
    http: aiohttp.ClientSession  # sends the token
    runtime: Runtime
    store: Store
    kept: Recorder
    app: web.Application
    db: Path

    def url(self, path: str) -> str:
        return f"{self.base}/api/v1{path}"

    async def call(
        self, method: str, path: str, body: Any = None, *, data: bytes | None = None
    ) -> tuple[int, Any]:
        """(status, decoded JSON or None) of a request to ``/api/v1{path}``."""
        async with self.http.request(method, self.url(path), json=body, data=data) as response:
            text = await response.text()
            if response.content_type in ("application/json", "application/problem+json"):
                return response.status, await response.json(content_type=None)
            return response.status, text or None


def build(config: Config, assembly: Assembly, max_body_bytes: int) -> web.Application:
    """The daemon's application with the API and integration routes (as pagerd.app wires it)."""
    links = AckLinks(bytes(range(32)), config.http.public_url)
    app = web_app(assembly, links=links, tokens=(TOKEN,), max_body_bytes=max_body_bytes)
    add_api_routes(app)
    add_integration_routes(app, config=config)
    return app


@contextlib.asynccontextmanager
async def serve_api(
    database: Path, config: Config | None = None, *, max_body_bytes: int = 65536
) -> AsyncIterator[ApiSite]:
    """Serve the API on a free port of 127.0.0.1 over a new database at ``database``."""
    config = config or Config()
    store = await Store.open(database)
    try:
        await apply_declared(store, declared(config))
        async with (
            assembled(
                store,
                fallback_policy=config.routing.fallback_policy,
                default_ack_timeout_s=config.escalation.ack_timeout_s,
            ) as assembly,
        ):
            app = build(config, assembly, max_body_bytes)
            async with serving(app) as base, aiohttp.ClientSession(headers=AUTH) as http:
                yield ApiSite(base, http, assembly.runtime, store, assembly.recorder, app, database)
    finally:
        await store.close()


@contextlib.contextmanager
def threaded_site(database: Path, config: Config | None = None) -> Iterator[str]:
    """Serve the API from a thread with its own event loop; yields the base URL."""
    ready: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        async with serve_api(database, config) as site:
            ready.append(site.base)
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported by the waiting test
            failure.append(error)
        finally:
            started.set()
            loop.close()

    thread = threading.Thread(target=run, name="api-site", daemon=True)
    thread.start()
    started.wait(timeout=30)
    try:
        if not ready:
            raise RuntimeError(f"the API site did not start: {failure!r}")
        yield ready[0]
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
