"""HTTP connection limits: a deadline for each request, a cap on connections, descriptors kept.

aiohttp's server has keep-alive and handler timeouts but no deadline for reading a
request: a client that sends half a request and waits holds its connection, and a
file descriptor, as long as it likes, and enough of them leave none for the SMS and
email sends. Here (CONTRACT §9):

- ``LimitedRequestHandler`` is aiohttp's protocol with one timer per connection,
  armed at accept and again at the end of each response; when it fires, a client
  that has not sent a whole request (headers and body) since is disconnected. While
  pagerd works on a request it has read, the timer has nothing to say.
- ``ConnectionGate`` admits at most ``max_connections`` at once (the listener,
  pagerd.web.listener, asks it for each connection); a connection past that is
  answered 503 and closed at once, so it holds nothing.
- ``connection_budget`` lowers ``max_connections`` where the descriptors would not
  cover the connections plus what pagerd needs for itself and its sends.

Every refusal and cut is counted and logged through ``RateLimitedLog``: a flood of
them costs one line per kind per interval, never one per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import resource
import socket
from collections import deque
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
# What pagerd holds besides HTTP connections and sends: stdio, epoll, the SQLite files
# of each connection, MQTT, the notify socket, the listening sockets (14 at rest), a
# refused connection for the moment it is answered, and room.
OWN_DESCRIPTORS = 64
LOG_INTERVAL_S = 10.0
CUT_BATCH = 8  # connections cut per turn of the loop (each ~0.1 ms, most of it the kernel's)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """``[http] request_timeout_s`` and ``max_connections``, and the descriptors to keep free."""

    request_timeout_s: float = REQUEST_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    reserved_descriptors: int = OWN_DESCRIPTORS


def descriptor_reserve(outgoing: int) -> int:
    """Descriptors no HTTP client may take: pagerd's own, and ``outgoing`` sends at once."""
    return OWN_DESCRIPTORS + outgoing


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


def _host(peer: object) -> str:
    """The address of a peer as sockets name it (host, port[, ...]), without the port."""
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
        self._loop = asyncio.get_running_loop()
        self._to_cut: deque[LimitedRequestHandler] = deque()
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

    def refuse(self, conn: socket.socket, peer: object, *, answer: bool = True) -> None:
        """Answer 503 (unless ``answer`` is False: HTTPS, where only a handshake could say
        it) and close at once: the connection holds its descriptor no longer."""
        metrics.HTTP_CONNECTIONS_REFUSED.inc()
        self._log.warning(
            "http.connection_refused", max_connections=self.max_connections, peer=_host(peer)
        )
        # Read what the client sent already, so that closing is a FIN after the 503
        # rather than a reset that may overtake it; never wait for either.
        with contextlib.suppress(OSError):
            conn.recv(4096, socket.MSG_DONTWAIT)
        if answer:
            with contextlib.suppress(OSError):
                conn.send(self._refusal, socket.MSG_DONTWAIT)
        conn.close()

    def cut_soon(self, connection: LimitedRequestHandler) -> None:
        """Cut ``connection`` within a few turns of the loop, ``CUT_BATCH`` a turn.

        Clients that connected together time out together; cutting a thousand at once
        would hold the loop ~0.1 s, and every page with it.
        """
        self._to_cut.append(connection)
        if len(self._to_cut) == 1:
            self._loop.call_soon(self._cut_some)

    def _cut_some(self) -> None:
        for _ in range(min(CUT_BATCH, len(self._to_cut))):
            self._to_cut.popleft().cut_if_late()
        if self._to_cut:
            self._loop.call_soon(self._cut_some)

    def cut(self, transport: asyncio.Transport, waiting_for: str) -> None:
        """Disconnect a client that sent no whole request in time (408 if it sent part of one)."""
        metrics.HTTP_TIMEOUTS.labels(waiting_for=waiting_for).inc()
        fields = {
            "waiting_for": waiting_for,
            "timeout_s": self.request_timeout_s,
            "peer": _host(transport.get_extra_info("peername")),
        }
        if waiting_for == "request":  # an idle keep-alive connection: routine, just closed
            self._log.debug("http.idle_closed", **fields)
            transport.close()
        else:
            self._log.info("http.request_timeout", **fields)
            _send_and_close(transport, self._timeout)

    def accept_failed(self, error: object) -> None:
        code = error.errno if isinstance(error, OSError) else None
        name = errno.errorcode.get(code, str(code)) if code else type(error).__name__
        metrics.HTTP_ACCEPT_ERRORS.labels(errno=name).inc()
        self._log.error(
            "http.accept_failed", errno=name, error=str(error), open_connections=self.open
        )

    def handshake_failed(self, peer: object, error: OSError) -> None:
        metrics.HTTP_TLS_HANDSHAKE_FAILURES.inc()
        self._log.info("http.tls_handshake_failed", peer=_host(peer), error=str(error))

    def client_gone(self, what: str) -> None:
        self._log.debug("http.client_gone", what=what)

    def protocol_error(self, what: str, error: BaseException | None) -> None:
        metrics.HTTP_PROTOCOL_ERRORS.inc()
        fields: dict[str, object] = {"what": what, "error": repr(error)}
        if error is not None and not isinstance(error, HttpProcessingError):
            fields["exc_info"] = error  # not a client's malformed request: a traceback helps
        self._log.warning("http.protocol_error", **fields)


class LimitedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol with a request deadline, holding a place at a gate."""

    __slots__ = (
        "_connected",
        "_deadline",
        "_deadline_handle",
        "_gate",
        "_has_place",
        "_heard",
        "_reading",
    )

    def __init__(self, manager: web.Server, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._has_place = True  # admitted by the gate before it was made
        self._connected = False
        self._deadline = 0.0  # loop time by which a whole request must be in
        self._deadline_handle: asyncio.TimerHandle | None = None
        # The body of the newest request begun since the deadline was armed (None: none
        # begun), and whether any byte came since; both decide what the deadline cuts.
        self._reading: StreamReader | None = None
        self._heard = False

    def release_place(self) -> None:
        """Give this connection's place at the gate back, once."""
        if self._has_place:
            self._has_place = False
            self._gate.release()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connected = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connected = False
        self.release_place()
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
        if not self._connected:
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
        if not self._connected:
            return
        if self._loop.time() < self._deadline:  # re-armed by a response since: not yet
            self._deadline_handle = self._loop.call_at(self._deadline, self._on_deadline)
            return
        if self._owed() is not None:
            self._gate.cut_soon(self)

    def _owed(self) -> str | None:
        """What of a request the client still owes (None: a whole one is in, or none due)."""
        reading = self._reading
        if reading is not None and reading.is_eof():
            return None  # answering it is pagerd's part, not the client's
        return "body" if reading is not None else "headers" if self._heard else "request"

    def cut_if_late(self) -> None:
        """Disconnect the client if its deadline passed with a request still owed."""
        transport = self.transport
        if not self._connected or transport is None or self._loop.time() < self._deadline:
            return  # gone, or a response ended since and its deadline is a new one
        owed = self._owed()
        if owed is not None:
            self._gate.cut(transport, owed)  # writes its answer, then closes
            self.force_close()  # aiohttp stops reading and handling this connection


def protocol_factory(
    server: web.Server, gate: ConnectionGate
) -> Callable[[], LimitedRequestHandler]:
    """Makes the protocol of each admitted connection."""
    loop = asyncio.get_running_loop()

    def make() -> LimitedRequestHandler:
        return LimitedRequestHandler(server, gate, loop=loop)

    return make
