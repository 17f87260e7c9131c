"""pagerd assembled in process as the app wires it: store → directory → runtime and catalogue,
and its web application on a free loopback port. Stand-ins keep what the outbox and the
MQTT publisher are given, unless a test brings its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from pagerd.core.ports import Clock, Outbox, Publisher, Store, Writer
from pagerd.runtime.catalogue import Catalogue
from pagerd.runtime.clock import SystemClock
from pagerd.runtime.directory import Directory
from pagerd.runtime.router import Runtime
from pagerd.web.acklinks import AckLinks
from pagerd.web.server import build_app, start_http
from tests.doubles import Recorder


@dataclass
class Assembly:
    store: Store
    directory: Directory
    runtime: Runtime
    catalogue: Catalogue
    recorder: Recorder  # the outbox and publisher, unless the test brought its own


@contextlib.asynccontextmanager
async def assembled(
    store: Store,
    *,
    writer: Writer | None = None,
    clock: Clock | None = None,
    outbox: Outbox | None = None,
    publisher: Publisher | None = None,
    fallback_policy: str = "",
    default_ack_timeout_s: float = 900.0,
) -> AsyncIterator[Assembly]:
    """The runtime and catalogue over ``store`` (writes through ``writer`` if given)."""
    directory = await Directory.load(store)
    recorder = Recorder()
    try:
        async with asyncio.TaskGroup() as group:
            runtime = Runtime(
                store=writer or store,
                directory=directory,
                clock=clock or SystemClock(),
                outbox=outbox or recorder,
                publisher=publisher or recorder,
                spawner=group,
                fallback_policy=fallback_policy,
            )
            catalogue = Catalogue(
                store,
                directory,
                default_ack_timeout_s=default_ack_timeout_s,
                fallback_policy=fallback_policy,
            )
            try:
                yield Assembly(store, directory, runtime, catalogue, recorder)
            finally:
                await runtime.drained()
                runtime.stop_timers()
    finally:
        directory.close()


def web_app(
    assembly: Assembly,
    *,
    links: AckLinks,
    tokens: Sequence[str],
    not_ready: Callable[[], Sequence[str]] = list,
    max_body_bytes: int = 65536,
) -> web.Application:
    """The daemon's web application, before the API, console or integrations add routes."""
    return build_app(
        runtime=assembly.runtime,
        catalogue=assembly.catalogue,
        store=assembly.store,
        links=links,
        not_ready=not_ready,
        clock=assembly.runtime.clock,
        max_body_bytes=max_body_bytes,
        tokens=tokens,
    )


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields its base URL."""
    runner = await start_http(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
