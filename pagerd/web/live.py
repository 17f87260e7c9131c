"""Live updates: the runtime's publications as a Server-Sent Events stream, ``GET /api/v1/events``.

``LiveFeed`` is a second publisher beside MQTT's (the runtime's ``Publisher`` port): each
state change and timeline event is encoded once and offered to every connected client's
own bounded queue. Publishing never waits: a client whose queue is full (it reads
slower than pagerd publishes) is dropped, its connection aborted, and it reconnects
and reads the lists afresh, as an EventSource does by itself. The event loop is held
for a publication only as long as one append per client takes.

Events: ``service`` (health and open incident of a service, as ``IncidentBrief``),
``timeline`` (an incident's event, as on MQTT's ``events/{service}``) and ``oncall`` (a
schedule's hand-over, as on MQTT's ``oncall/{schedule}``); a comment every
``KEEPALIVE_S`` keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from datetime import datetime

import msgspec
from aiohttp import web

from pagerd.core.domain import RecordTimeline, ServiceState
from pagerd.core.ports import OnCallNow
from pagerd.core.times import rfc3339
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger
from pagerd.web.auth import client_key

log = get_logger(__name__)

KEEPALIVE_S = 15.0
# Frames a client may have waiting before it counts as too slow and is dropped: an
# alert storm of this many changes within one client's read is what it takes.
QUEUE_FRAMES = 2_000
MAX_CLIENTS = 1_000  # [http] max_connections is 1,000 by default: at most one each
RETRY_MS = 2_000  # how soon a browser reconnects after the stream ends


class _Client:
    """One stream's frames waiting to be written, and whether it was dropped."""

    __slots__ = ("dropped", "frames", "limit", "peer", "ready", "transport")

    def __init__(self, request: web.Request, limit: int) -> None:
        self.limit = limit
        self.frames: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.dropped = False
        self.peer = client_key(request)
        self.transport = request.transport

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame``; False if the queue is full (the client must go)."""
        if len(self.frames) >= self.limit:
            return False
        self.frames.append(frame)
        self.ready.set()
        return True

    def drop(self) -> None:
        """End the stream now: its handler may be waiting for a write the client never
        reads, which only aborting the connection interrupts."""
        self.dropped = True
        self.frames.clear()
        self.ready.set()
        if self.transport is not None:
            self.transport.abort()


class LiveFeed:
    """The publisher that fans the runtime's publications out to SSE clients."""

    def __init__(self, *, queue_frames: int = QUEUE_FRAMES) -> None:
        self._queue_frames = queue_frames
        self._clients: set[_Client] = set()
        self._closed = False

    # --- the Publisher port ---

    def publish_state(self, service_id: str, state: ServiceState, at: datetime) -> None:
        if self._clients:
            self._broadcast(b"service", msgspec.json.encode(service_event(state, at)))

    def publish_events(self, service_id: str, events: Iterable[RecordTimeline]) -> None:
        if not self._clients:
            return
        for event in events:
            body = {
                "type": event.type,
                "at": rfc3339(event.at),
                "incident_id": event.incident_id,
                "service_id": service_id,
                "detail": dict(event.detail),
            }
            self._broadcast(b"timeline", msgspec.json.encode(body))

    def publish_on_call(self, schedule_id: str, on_call: OnCallNow | None) -> None:
        if not self._clients:
            return
        body: dict[str, object] = {"schedule_id": schedule_id, "developer_id": None}
        if on_call is not None:
            until = None if on_call.until is None else rfc3339(on_call.until)
            body.update(developer_id=on_call.developer_id, name=on_call.name, until=until)
        self._broadcast(b"oncall", msgspec.json.encode(body))

    def _broadcast(self, kind: bytes, data: bytes) -> None:
        frame = b"event: " + kind + b"\ndata: " + data + b"\n\n"
        slow = [client for client in self._clients if not client.offer(frame)]
        for client in slow:
            self._clients.discard(client)
            client.drop()
            metrics.LIVE_CLIENTS_DROPPED.inc()
            metrics.LIVE_CLIENTS.set(len(self._clients))
            log.warning("live.client_dropped", client=client.peer, queued=client.limit)

    # --- the stream ---

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Serve one client until it leaves, is dropped, or pagerd stops."""
        if self._closed:
            raise web.HTTPServiceUnavailable(text="pagerd is stopping")
        if len(self._clients) >= MAX_CLIENTS:
            raise web.HTTPServiceUnavailable(text=f"{MAX_CLIENTS} live streams are open already")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # a proxy must pass each event on at once
            }
        )
        await response.prepare(request)
        client = _Client(request, self._queue_frames)
        self._clients.add(client)
        metrics.LIVE_CLIENTS.set(len(self._clients))
        try:
            await response.write(f"retry: {RETRY_MS}\n: live\n\n".encode())
            await self._serve(client, response)
        except (ConnectionResetError, ConnectionError):
            pass  # the client left, or was dropped: nothing of pagerd's failed
        finally:
            self._clients.discard(client)
            metrics.LIVE_CLIENTS.set(len(self._clients))
        return response

    async def _serve(self, client: _Client, response: web.StreamResponse) -> None:
        while True:
            if client.frames:
                # Everything waiting, in one write.
                frames = b"".join(client.frames)
                client.frames.clear()
                await response.write(frames)
            if client.dropped or self._closed:
                return
            client.ready.clear()
            if not client.frames:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        await client.ready.wait()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")

    def close(self) -> None:
        """End every stream (pagerd is stopping): browsers reconnect to whoever serves."""
        self._closed = True
        for client in self._clients:
            client.ready.set()

    @property
    def clients(self) -> int:
        """How many streams are open."""
        return len(self._clients)


def service_event(state: ServiceState, at: datetime) -> dict[str, object]:
    """A service's health and open incident, as the console's lists show them."""
    incident = state.open_incident
    brief = None
    if incident is not None:
        brief = {
            "id": incident.id,
            "message": incident.message,
            "status": incident.status.value,
            "level": incident.level,
            "opened_at": rfc3339(incident.opened_at),
            "acknowledged_at": None
            if incident.acknowledged_at is None
            else rfc3339(incident.acknowledged_at),
            "acknowledged_by": incident.acknowledged_by,
        }
    return {
        "service_id": state.service_id,
        "health": "healthy" if incident is None else "unhealthy",
        "incident": brief,
        "updated_at": rfc3339(at),
    }


LIVE = web.AppKey("pagerd.live", LiveFeed)


async def _close_feed(app: web.Application) -> None:
    app[LIVE].close()


def serve_live(app: web.Application, feed: LiveFeed) -> None:
    """Serve ``feed`` at ``GET /api/v1/events`` (the API's auth applies); its streams end
    when the application shuts down."""
    app[LIVE] = feed
    app.on_shutdown.append(_close_feed)
