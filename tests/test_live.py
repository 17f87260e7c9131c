"""Live updates (issue 19): ``GET /api/v1/events``, Server-Sent Events fed by the runtime's
publications, served in process by a real aiohttp server over a real SQLite file.

A reader that keeps up gets every state change and timeline event; one that stops
reading is dropped once its queue is full, while the others go on undisturbed.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pagerd.core.domain import RecordTimeline
from pagerd.core.ports import OnCallNow
from pagerd.intake.api import add_api_routes
from pagerd.store.sqlite import Store
from pagerd.telemetry.metrics import REGISTRY
from pagerd.web.acklinks import AckLinks
from pagerd.web.live import LiveFeed, serve_live
from tests.assembly import assembled, serving, web_app
from tests.doubles import T0
from tests.harness import eventually

TOKEN = "live-test-token-Qe4nR7tY2uI9oP3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUEUE = 50


@dataclass
class Site:
    base: str
    feed: LiveFeed
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.base}/api/v1{path}", json=body) as r:
            assert r.status < 300, await r.text()
            return await r.json()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    store = await Store.open(tmp_path / "pagerd.db")
    feed = LiveFeed(queue_frames=QUEUE)
    try:
        async with assembled(store, publisher=feed) as assembly:
            app = web_app(assembly, links=AckLinks(bytes(range(32)), "http://x"), tokens=(TOKEN,))
            add_api_routes(app)
            serve_live(app, feed)
            async with serving(app) as base, aiohttp.ClientSession(headers=AUTH) as http:
                yield Site(base, feed, http)
    finally:
        await store.close()


async def read_events(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, Any]]:
    """The next ``count`` events of a stream, as (event, decoded data)."""
    found: list[tuple[str, Any]] = []
    kind = ""
    async with asyncio.timeout(10):
        while len(found) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((kind, json.loads(line.removeprefix("data: "))))
    return found


def dropped() -> float:
    return REGISTRY.get_sample_value("pagerd_live_clients_dropped_total") or 0.0


async def test_a_stream_carries_each_state_change_and_timeline_event(site: Site) -> None:
    """Given a console's stream open, when an alert opens an incident and it is
    acknowledged, then the stream carries the service's new health with its incident,
    and each timeline event, in order, without being asked again."""
    policy = {"levels": [{"targets": [{"type": "sms", "phone_number": "+15550001111"}]}]}
    await site.call("PUT", "/policies/p", policy)
    await site.call("PUT", "/services/api", {"policy_id": "p"})
    async with site.http.get(f"{site.base}/api/v1/events") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        await eventually(lambda: site.feed.clients == 1, what="the stream registered")
        opened = await site.call("POST", "/services/api/alerts", {"message": "down"})
        await site.call("POST", "/services/api/ack", {"by": "alice"})

        events = await read_events(stream, 4)

    incident_id = opened["incident_id"]
    assert [(kind, data.get("type")) for kind, data in events] == [
        ("timeline", "incident.triggered"),
        ("service", None),
        ("timeline", "incident.acknowledged"),
        ("service", None),
    ]
    service = events[1][1]
    assert (service["service_id"], service["health"]) == ("api", "unhealthy")
    assert service["incident"]["id"] == incident_id
    assert service["incident"]["message"] == "down"
    assert events[2][1]["detail"] == {"by": "alice", "level": 1, "via": "api"}
    assert events[3][1]["incident"]["acknowledged_by"] == "alice"
    # Gone: the next event written to it finds the connection closed, and forgets it.
    await site.call("POST", "/services/api/healthy")
    await eventually(lambda: site.feed.clients == 0, what="the stream forgotten")


async def test_a_stream_carries_each_hand_over(site: Site) -> None:
    """Given a stream open, when a schedule's on-call changes and a schedule goes, then
    the stream says who is on call until when, and that nobody is on the one gone."""
    async with site.http.get(f"{site.base}/api/v1/events") as stream:
        await eventually(lambda: site.feed.clients == 1, what="the stream registered")
        site.feed.publish_on_call("primary", OnCallNow(3, "Alice", T0))
        site.feed.publish_on_call("old", None)
        events = await read_events(stream, 2)
    assert events == [
        (
            "oncall",
            {
                "schedule_id": "primary",
                "developer_id": 3,
                "name": "Alice",
                "until": "2026-11-22T10:00:00.000Z",
            },
        ),
        ("oncall", {"schedule_id": "old", "developer_id": None}),
    ]


async def test_a_stream_needs_a_token(site: Site) -> None:
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{site.base}/api/v1/events") as response,
    ):
        assert response.status == 401


async def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on(site: Site) -> None:
    """Given one stream read and one whose client never reads, when thousands of events
    are published, then the silent one is dropped (counted) once its queue is full, and
    the reader gets every event; publishing never waits for either."""
    before = dropped()
    host, port = site.base.removeprefix("http://").split(":")
    silent = socket.create_connection((host, int(port)))
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = f"GET /api/v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
    silent.sendall(head.encode() + b"\r\n")
    try:
        async with site.http.get(f"{site.base}/api/v1/events") as stream:
            await eventually(lambda: site.feed.clients == 2, what="both streams registered")
            big = "x" * 4_000
            reading = asyncio.create_task(read_events(stream, 2_000))
            for n in range(2_000):
                event = RecordTimeline("inc-1", "incident.note", T0, {"text": big, "n": n})
                site.feed.publish_events("api", (event,))  # synchronous: never waits
                if n % 10 == 0:
                    await asyncio.sleep(0)  # the server writes; the reader reads
            events = await reading
        assert [data["detail"]["n"] for _, data in events] == list(range(2_000))
        assert dropped() == before + 1
    finally:
        silent.close()
