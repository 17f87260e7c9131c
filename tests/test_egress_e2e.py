"""Webhook egress end to end (CONTRACT §5, issue 13 point 6): a real pagerd, mosquitto and
webhook sinks on 127.0.0.1. A token holder cannot make pagerd POST to internal
addresses, follow a redirect, read a stream without end, or tell ports apart."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import PagerdFactory
from tests.harness import API_TOKEN, Monitor, Pagerd, eventually, free_port

TOKEN = API_TOKEN
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Sink:
    """Webhook receivers: /hook answers 200, /redirect 307 to /hook, /flood never ends."""

    hits: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def hook(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        await request.read()
        return web.json_response({"ok": True})

    async def redirect(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        raise web.HTTPTemporaryRedirect("/hook")

    async def flood(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(16 * 1024):  # 1 GiB, if anyone read it all
                await response.write(chunk)
        except ConnectionError:
            pass
        return response


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    receiver = Sink()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/redirect", receiver.redirect)
    app.router.add_post("/flood", receiver.flood)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.port = int(runner.addresses[0][1])
    yield receiver
    await runner.cleanup()


async def call(daemon: Pagerd, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=BEARER) as http,
        http.request(method, f"{daemon.base_url}/api/v1{path}", json=body) as response,
    ):
        return response.status, await response.json(content_type=None)


def webhooks(*urls: str) -> dict[str, Any]:
    return {"levels": [{"targets": [{"type": "webhook", "url": url} for url in urls]}]}


async def alert(daemon: Pagerd, service: str) -> str:
    status, accepted = await call(daemon, "POST", f"/services/{service}/alerts", {"message": "x"})
    assert status == 202, accepted
    return str(accepted["incident_id"])


async def incident_when(
    daemon: Pagerd, incident_id: str, done: Callable[[dict[str, Any]], bool], *, timeout: float = 10
) -> dict[str, Any]:
    """``GET /api/v1/incidents/{id}`` polled until ``done`` holds of it, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        _, incident = await call(daemon, "GET", f"/incidents/{incident_id}")
        if done(incident):
            return dict(incident)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {incident}")
        await asyncio.sleep(0.02)


def pages_by_target(incident: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {page["to"]: page for page in incident["notifications"]}


def loopback_name() -> str:
    """A host name (not an address, not 'localhost') that resolves to loopback here."""
    name = socket.gethostname()
    try:
        address = ipaddress.ip_address(socket.gethostbyname(name))
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if not address.is_loopback:
        pytest.skip(f"this machine's name {name!r} resolves to {address}, not loopback")
    return name


async def test_a_webhook_to_an_internal_address_is_refused_at_put_and_at_connect(
    make_pagerd: PagerdFactory, monitor: Monitor, sink: Sink
) -> None:
    """Given no [notify.webhook] allow_hosts, when a token holder PUTs a webhook to
    127.0.0.1, then it is a 422 naming the field; when the URL names a host that resolves
    to loopback, the PUT passes but the page fails at connect time, `address not allowed`,
    in last_error, the timeline, the MQTT events and the log, and nothing is sent."""
    host = loopback_name()
    daemon = make_pagerd([], {}, webhook_allow_hosts=[])
    await daemon.start()

    status, refused = await call(daemon, "PUT", "/policies/hooks", webhooks(sink.url("/hook")))
    assert status == 422, refused
    assert [e["field"] for e in refused["errors"]] == ["levels[0].targets[0].url"]
    assert "127.0.0.1 is a loopback address" in refused["errors"][0]["problem"]
    status, saved = await call(daemon, "PUT", "/policies/hooks", webhooks(sink.url("/hook", host)))
    assert status == 201, saved
    status, _ = await call(daemon, "PUT", "/services/internal", {"policy_id": "hooks"})
    assert status == 201

    incident = await incident_when(
        daemon,
        await alert(daemon, "internal"),
        lambda i: [n["status"] for n in i["notifications"]] == ["failed"],
    )

    (page,) = incident["notifications"]
    assert (page["status"], page["attempts"], page["last_error"]) == (
        "failed",
        1,
        "address not allowed",
    )
    failed = [e for e in incident["timeline"] if e["type"] == "notification.failed"]
    assert [e["detail"]["error"] for e in failed] == ["address not allowed"]
    assert sink.hits == []
    await eventually(
        lambda: any(e.get("type") == "notification.failed" for e in monitor.on("events/internal")),
        what="the failure on MQTT",
    )
    published = [e for e in monitor.on("events/internal") if e["type"] == "notification.failed"]
    assert published[0]["detail"]["error"] == "address not allowed"
    logged = [e for e in daemon.log_events() if e["event"] == "notification.failed"]
    assert logged[0]["reason"] == "address not allowed"
    assert logged[0]["service_id"] == "internal"


async def test_redirects_are_not_followed_and_an_endless_answer_is_cut(
    make_pagerd: PagerdFactory, sink: Sink
) -> None:
    """Given allow_hosts = ["127.0.0.1"], when a webhook answers 307 and another streams a
    body without end, then the first fails at once without following, the second counts
    as sent once its status line is in, and a third to a closed port says only
    `connection refused`."""
    closed = free_port()
    daemon = make_pagerd([], {})
    await daemon.start()
    policy = webhooks(sink.url("/redirect"), sink.url("/flood"), f"http://127.0.0.1:{closed}/hook")
    assert (await call(daemon, "PUT", "/policies/hooks", policy))[0] == 201
    assert (await call(daemon, "PUT", "/services/hooked", {"policy_id": "hooks"}))[0] == 201

    closed_url = f"http://127.0.0.1:{closed}/hook"

    def settled(incident: dict[str, Any]) -> bool:
        pages = pages_by_target(incident)
        return (
            pages[sink.url("/redirect")]["status"] == "failed"
            and pages[sink.url("/flood")]["status"] == "sent"
            and pages[closed_url]["last_error"] is not None
        )

    incident = await incident_when(daemon, await alert(daemon, "hooked"), settled)

    by_target = pages_by_target(incident)
    redirected = by_target[sink.url("/redirect")]
    assert (redirected["status"], redirected["attempts"], redirected["last_error"]) == (
        "failed",
        1,
        "HTTP 307 (redirects are not followed)",
    )
    assert by_target[sink.url("/flood")]["status"] == "sent"
    assert sorted(sink.hits) == ["/flood", "/redirect"]  # /hook never: the 307 was not followed
    refused = by_target[closed_url]
    assert refused["status"] == "pending"  # retried, with the class only
    assert refused["last_error"] == "connection refused"
    assert str(closed) not in json.dumps(incident["timeline"])
