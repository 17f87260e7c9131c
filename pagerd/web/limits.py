"""HTTP connection limits: a deadline for each request, a cap on connections, descriptors kept.

aiohttp's server has keep-alive and handler timeouts but no deadline for reading a
request: a client that sends half a request and waits holds its connection, and a
file descriptor, as long as it likes, and enough of them leave none for the SMS and
email sends. Here (CONTRACT §9):

- ``LimitedRequestHandler`` is aiohttp's protocol with one timer per connection,
  armed at accept and again at the end of each response; when it fires, a client
  that has not sent a whole request (headers and body) since is disconnected. While
  pagerd works on a request it has read, the timer has nothing to say.
- ``ConnectionGate`` admits at most ``max_connections`` at once; a connection past
  that is answered 503 and closed at once, so it holds nothing.
- ``connection_budget`` lowers ``max_connections`` where the descriptors would not
  cover the connections plus what pagerd needs for itself and its sends.

Every refusal and cut is counted and logged through ``RateLimitedLog``: a flood of
them costs one line per kind per interval, never one per connection.
"""

from __future__ import annotations

import asyncio
import errno
import json
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from pagerd.telemetry import metrics
from pagerd.telemetry.logs import RateLimitedLog, get_logger

log = get_logger(__name__)

REQUEST_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 1000
# Connections the listening socket takes per turn of the loop (asyncio accepts up to its
# backlog at once), each holding a descriptor until it is admitted or refused.
ACCEPT_BACKLOG = 128
# What pagerd holds besides HTTP connections and sends: stdio, epoll, the SQLite files
# of each connection, MQTT, the notify socket, the listening sockets (14 at rest), and room.
OWN_DESCRIPTORS = 64
LOG_INTERVAL_S = 10.0
# asyncio reports a failed accept (EMFILE, ENFILE, ENOBUFS, ENOMEM) to the loop's
# exception handler with this message, from every one of up to ``backlog`` tries a turn.
_ACCEPT_FAILED = "socket.accept() out of system resource"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """``[http] request_timeout_s`` and ``max_connections``, and the descriptors to keep free."""

    request_timeout_s: float = REQUEST_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    reserved_descriptors: int = OWN_DESCRIPTORS + ACCEPT_BACKLOG


def descriptor_reserve(outgoing: int) -> int:
    """Descriptors no HTTP client may take: pagerd's own, an accept burst, ``outgoing`` sends."""
    return OWN_DESCRIPTORS + ACCEPT_BACKLOG + outgoing


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; log both; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.info("pagerd.descriptors", soft_limit=soft, hard_limit=hard)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as error:  # e.g. setrlimit refused by a seccomp filter
        log.warning(
            "pagerd.descriptors_not_raised", soft_limit=soft, hard_limit=hard, error=str(error)
        )
        return soft
    log.info("pagerd.descriptors", soft_limit=target, hard_limit=hard, raised_from=soft)
    return target


def connection_budget(limits: HttpLimits) -> int:
    """``max_connections``, lowered so that connections and the reserve fit the soft limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = soft - limits.reserved_descriptors
    if soft == resource.RLIM_INFINITY or limits.max_connections <= room:
        return limits.max_connections
    budget = max(1, room)
    log.warning(
        "http.max_connections_lowered",
        configured=limits.max_connections,
        max_connections=budget,
        soft_limit=soft,
        reserved=limits.reserved_descriptors,
        hint="raise LimitNOFILE (the unit) or ulimit -n",
    )
    return budget


def _raw_response(status: int, title: str, detail: str, headers: dict[str, str]) -> bytes:
    """A whole problem+json response that closes its connection, written without aiohttp."""
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    lines = [
        f"HTTP/1.1 {status} {title}",
        "Content-Type: application/problem+json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def _send_and_close(transport: asyncio.Transport, data: bytes) -> None:
    """Write ``data`` and close; a client that does not read gets no say in when."""
    transport.write(data)
    transport.close()
    if transport.get_write_buffer_size():
        transport.abort()


class ConnectionGate:
    """Admits up to ``max_connections`` at once; counts, logs and refuses the rest."""

    def __init__(self, max_connections: int, request_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.open = 0
        self._log = RateLimitedLog(log, LOG_INTERVAL_S)
        self._refusal = _raw_response(
            503,
            "Service Unavailable",
            f"pagerd has {max_connections} connections open, its most; try again in a moment",
            {"Retry-After": "1"},
        )
        self._timeout = _raw_response(
            408,
            "Request Timeout",
            f"a request's headers and body must arrive within {request_timeout_s:g} s of"
            " the connection, or of the previous response on it",
            {},
        )
        metrics.HTTP_MAX_CONNECTIONS.set(max_connections)
        metrics.HTTP_CONNECTIONS.set(0)

    def admit(self) -> bool:
        if self.open >= self.max_connections:
            return False
        self.open += 1
        metrics.HTTP_CONNECTIONS.set(self.open)
        return True

    def release(self) -> None:
        self.open -= 1
        metrics.HTTP_CONNECTIONS.set(self.open)

    def refuse(self, transport: asyncio.Transport) -> None:
        """Answer 503 and close at once: the connection costs no descriptor past this turn."""
        metrics.HTTP_CONNECTIONS_REFUSED.inc()
        self._log.warning(
            "http.connection_refused", max_connections=self.max_connections, peer=_peer(transport)
        )
        _send_and_close(transport, self._refusal)

    def cut(self, transport: asyncio.Transport, waiting_for: str) -> None:
        """Disconnect a client that sent no whole request in time (408 if it sent part of one)."""
        metrics.HTTP_TIMEOUTS.labels(waiting_for=waiting_for).inc()
        fields = {"waiting_for": waiting_for, "timeout_s": self.request_timeout_s}
        if waiting_for == "request":  # an idle keep-alive connection: routine, just closed
            self._log.debug("http.idle_closed", **fields, peer=_peer(transport))
            transport.close()
        else:
            self._log.info("http.request_timeout", **fields, peer=_peer(transport))
            _send_and_close(transport, self._timeout)

    def accept_failed(self, error: object) -> None:
        code = error.errno if isinstance(error, OSError) else None
        name = errno.errorcode.get(code, str(code)) if code else type(error).__name__
        metrics.HTTP_ACCEPT_ERRORS.labels(errno=name).inc()
        self._log.error(
            "http.accept_failed", errno=name, error=str(error), open_connections=self.open
        )

    def client_gone(self, what: str) -> None:
        self._log.debug("http.client_gone", what=what)

    def protocol_error(self, what: str, error: BaseException | None) -> None:
        metrics.HTTP_PROTOCOL_ERRORS.inc()
        fields: dict[str, object] = {"what": what, "error": repr(error)}
        if error is not None and not isinstance(error, HttpProcessingError):
            fields["exc_info"] = error  # not a client's malformed request: a traceback helps
        self._log.warning("http.protocol_error", **fields)


class LimitedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol, admitted by a ``ConnectionGate``, with a request deadline."""

    __slots__ = ("_admitted", "_deadline", "_deadline_handle", "_gate", "_heard", "_reading")

    def __init__(self, manager: web.Server, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._admitted = False
        self._deadline = 0.0  # loop time by which a whole request must be in
        self._deadline_handle: asyncio.TimerHandle | None = None
        # The body of the newest request begun since the deadline was armed (None: none
        # begun), and whether any byte came since; both decide what the deadline cuts.
        self._reading: StreamReader | None = None
        self._heard = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._gate.admit():
            self._gate.refuse(transport)
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return  # refused: aiohttp never knew of it
        self._admitted = False
        self._gate.release()
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if data:
            self._heard = True
        if self._messages:  # requests parsed and not yet taken: the newest is being read
            self._reading = self._messages[-1][1]

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._arm()  # the next request's time counts from the end of this response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's report of a malformed request: rate-limited, not a traceback each."""
        try:
            what = str(args[0]) % args[1:] if args else ""
        except (TypeError, ValueError):
            what = str(args)
        error = kw.get("exc_info")
        if self.transport is None:  # the client left (or was cut) mid-request: no one to tell
            self._gate.client_gone(what)
            return
        self._gate.protocol_error(what, error if isinstance(error, BaseException) else None)

    def _arm(self) -> None:
        if not self._admitted:
            return
        loop = self._loop
        self._deadline = loop.time() + self._gate.request_timeout_s
        # A pipelined request already parsed is the one now being read.
        self._reading = self._messages[-1][1] if self._messages else None
        self._heard = self._reading is not None
        if self._deadline_handle is None:
            self._deadline_handle = loop.call_at(self._deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        transport = self.transport
        if not self._admitted or transport is None:
            return
        if self._loop.time() < self._deadline:  # re-armed by a response since: not yet
            self._deadline_handle = self._loop.call_at(self._deadline, self._on_deadline)
            return
        reading = self._reading
        if reading is not None and reading.is_eof():
            return  # the whole request is in: answering it is pagerd's part, not the client's
        waiting_for = "body" if reading is not None else "headers" if self._heard else "request"
        self._gate.cut(transport, waiting_for)  # writes its answer, then closes
        self.force_close()  # aiohttp stops reading and handling this connection


def protocol_factory(server: web.Server, gate: ConnectionGate) -> Callable[[], RequestHandler]:
    """What ``loop.create_server`` calls for each accepted connection."""
    loop = asyncio.get_running_loop()

    def make() -> RequestHandler:
        return LimitedRequestHandler(server, gate, loop=loop)

    return make


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, gate: ConnectionGate) -> None:
    """Route asyncio's failed-accept reports to the gate: counted, one line per interval.

    asyncio logs each with a traceback, up to its backlog times a turn (392 MB in 3
    minutes once, when the descriptors ran out); anything else goes on as before.
    """
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            gate.accept_failed(context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
