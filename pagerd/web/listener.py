"""The HTTP listening sockets and their accept loop, which refuses past the connection cap.

asyncio's server would make a transport, a task and an aiohttp protocol for every
connection, only for the protocol to close it when the cap is reached; a client
reconnecting as fast as it is refused then costs pagerd ~100 µs each. Here a
refused connection never leaves the accepting callback: accept, a canned 503, close,
one descriptor for a few microseconds. An admitted one is handed to the event loop
(``connect_accepted_socket``) and served by aiohttp as usual.

When accept itself fails for want of descriptors, buffers or memory, the socket is
left alone for ``ACCEPT_RETRY_S`` (the kernel keeps the queue meanwhile): asyncio
would report every one of up to its backlog tries a turn, each with a traceback.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from pagerd.telemetry.logs import get_logger
from pagerd.web.limits import ConnectionGate, LimitedRequestHandler

log = get_logger(__name__)

ACCEPT_BACKLOG = 128  # the kernel's queue of connections not yet accepted
# Connections accepted per turn of the loop, so that pages get their turn in a flood;
# each costs ~0.1 ms, most of it the kernel's.
ACCEPT_BATCH = 8
ACCEPT_RETRY_S = 1.0  # after accept failed for want of resources, as asyncio waits


async def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` names, as ``loop.create_server`` binds."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # no dual stack: "::" is IPv6 only, as asyncio does
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                reason = (error.strerror or str(error)).lower()
                raise OSError(error.errno, f"cannot listen on {address!r}: {reason}") from None
            sock.listen(ACCEPT_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts on ``sockets``: admits through ``gate`` into aiohttp, refuses the rest itself.

    With ``tls``, an admitted connection is served once its handshake is done, which it
    must finish within the request timeout.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        make_protocol: Callable[[], LimitedRequestHandler],
        gate: ConnectionGate,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sockets = sockets
        self._make_protocol = make_protocol
        self._gate = gate
        self._tls = tls
        self._loop = asyncio.get_running_loop()
        self._handing_over: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self) -> None:
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def close(self) -> None:
        """Stop accepting; connections already handed to aiohttp are its to close."""
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        for task in self._handing_over:
            task.cancel()
        # Cancelled just above, by us: their cancellation is expected here.
        await asyncio.gather(*self._handing_over, return_exceptions=True)

    def _accept(self, sock: socket.socket) -> None:
        gate = self._gate
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client gave up while queued
                continue
            except OSError as error:  # out of descriptors, buffers or memory
                gate.accept_failed(error)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_S, self._resume, sock)
                return
            if not gate.admit():
                gate.refuse(conn, peer, answer=self._tls is None)
                continue
            task = self._loop.create_task(self._hand_over(conn, peer), name="pagerd[http-accept]")
            self._handing_over.add(task)
            task.add_done_callback(self._handing_over.discard)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _hand_over(self, conn: socket.socket, peer: object) -> None:
        """Make ``conn`` an aiohttp connection; its protocol gives its place back when lost."""
        protocol = self._make_protocol()
        try:
            if self._tls is None:
                await self._loop.connect_accepted_socket(lambda: protocol, conn)
            else:
                await self._loop.connect_accepted_socket(
                    lambda: protocol,
                    conn,
                    ssl=self._tls,
                    ssl_handshake_timeout=self._gate.request_timeout_s,
                )
        except (ssl.SSLError, ConnectionAbortedError) as error:  # ...or it took too long
            self._gate.handshake_failed(peer, error)
            self._abandon(protocol, conn)
        except OSError as error:  # e.g. the client reset while the transport was made
            log.info("http.connection_failed", error=repr(error))
            self._abandon(protocol, conn)
        except asyncio.CancelledError:  # close() cancelled it: pagerd is stopping
            self._abandon(protocol, conn)
            raise

    def _abandon(self, protocol: LimitedRequestHandler, conn: socket.socket) -> None:
        protocol.release_place()  # once only: connection_lost may have done it already
        conn.close()
