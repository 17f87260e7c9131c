"""pagerd's MQTT 3.1.1 client: one connection to a broker, over TCP or TLS, on asyncio.

What pagerd needs and no more: a persistent session, QoS 0 and 1 both ways,
acknowledgement by the caller (a PUBACK only once the effect is committed, many in one
write), reading that pauses, and a PUBLISH over the size limit refused without being
held. Messages are decoded straight from each read of the socket (``mqtt_codec``) and
handed to a synchronous handler on the event loop. Everything written in one turn of
the loop goes out in one write.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pagerd.intake.mqtt_codec import (
    CONNACK_REFUSALS,
    DISCONNECT_PACKET,
    MAX_PACKET_ID,
    PINGREQ_PACKET,
    SUBSCRIBE_FAILURE,
    ConnAck,
    ControlPacket,
    Decoder,
    MqttError,
    OversizedHandler,
    PingResp,
    ProtocolError,
    PubAck,
    PublishHandler,
    SubAck,
    connect_packet,
    puback_packets,
    publish_packet,
    subscribe_packet,
)

__all__ = [
    "ConnectError",
    "ConnectOptions",
    "ConnectRefusedError",
    "KeepaliveTimeoutError",
    "MqttClient",
    "MqttError",
    "OversizedHandler",
    "ProtocolError",
    "PublishHandler",
    "SubscribeRefusedError",
    "Will",
    "connect_first",
]

T = TypeVar("T")
DEAD_AFTER_KEEPALIVES = 1.5  # as a broker judges a client (§3.1.2.10)


class ConnectError(MqttError):
    """No connection: the address did not answer, TLS failed, or no CONNACK came.

    The message starts with the address (``host:port: why``), or several, ``; ``-separated.
    """

    kind = "connect"


class ConnectRefusedError(ConnectError):
    """The broker answered CONNECT with a refusal (§3.2.2.3)."""

    kind = "refused"

    def __init__(self, message: str, return_code: int) -> None:
        super().__init__(message)
        self.return_code = return_code


class SubscribeRefusedError(MqttError):
    """The broker refused a topic filter of a SUBSCRIBE (return code 0x80)."""

    kind = "subscribe"


class KeepaliveTimeoutError(MqttError):
    """Nothing came from the broker within 1.5 keepalives, pings included."""

    kind = "keepalive"


class _ClosedError(MqttError):
    kind = "closed"


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for us when the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    client_id: str
    clean_session: bool = True
    keepalive_s: int = 60
    username: str | None = None
    password: str | None = None
    will: Will | None = None
    ssl: ssl.SSLContext | None = None
    timeout_s: float = 10.0  # to connect and have CONNACK, and for each awaited answer
    max_message_bytes: int = 65_536  # a larger incoming payload goes to on_oversized


class MqttClient(asyncio.Protocol):
    """One connection: ``connect``, then use it until ``lost()`` says why it ended.

    ``on_message(topic, payload, packet id or None)`` is called for each PUBLISH at QoS
    0 or 1 as soon as it is read, even before ``subscribe`` returns (a persistent
    session's backlog comes right after CONNACK). A QoS 1 message stays
    unacknowledged until the caller passes its id to ``puback``. ``on_oversized(topic,
    size, packet id or None)`` is called instead for a payload over
    ``max_message_bytes``, once it has been read past and dropped. Neither is called
    while reading is paused. A handler must not raise: if it does, the connection ends.
    """

    def __init__(
        self,
        options: ConnectOptions,
        *,
        on_message: PublishHandler,
        on_oversized: OversizedHandler,
    ) -> None:
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._decoder = Decoder(
            options.max_message_bytes, on_message, on_oversized, self._on_control
        )
        self._transport: asyncio.Transport | None = None
        self._closing = False  # nothing more is written once set
        self._reason: MqttError | None = None  # why the connection ends, once known
        self._connack: asyncio.Future[ConnAck] = self._loop.create_future()
        self._lost: asyncio.Future[MqttError] = self._loop.create_future()
        self._outgoing = bytearray()  # written at the end of this turn of the loop
        self._next_id = 1
        self._awaiting_puback: dict[int, asyncio.Future[None] | None] = {}
        self._awaiting_suback: dict[int, tuple[asyncio.Future[tuple[int, ...]], list[str]]] = {}
        self._last_received = self._loop.time()
        self._next_ping = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.address = ("", 0)
        self.session_present = False

    # --- connecting and ending -------------------------------------------------------------

    async def connect(self, host: str, port: int) -> None:
        """Open the connection and wait for the broker's CONNACK; MqttError says why not."""
        if self._connack.done() or self._transport is not None:
            raise RuntimeError("an MqttClient connects once; make a new one to reconnect")
        self.address = (host, port)
        options = self._options
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(options.timeout_s):
                await self._loop.create_connection(
                    lambda: self,
                    host,
                    port,
                    ssl=options.ssl,
                    server_hostname=host if options.ssl else None,
                )
                connack = await self._connack
        except TimeoutError:
            error = ConnectError(f"{where}: no CONNACK within {options.timeout_s:g} s")
            self._fail(error)
            raise error from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(
                f"{where}: TLS certificate not trusted: {exc.verify_message}"
            ) from exc
        except ssl.SSLError as exc:
            raise ConnectError(f"{where}: TLS failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ConnectError(f"{where}: {_os_reason(exc)}") from exc
        except MqttError as exc:  # lost, or a protocol error, before CONNACK
            failure = ConnectError(f"{where}: {exc}")
            failure.kind = exc.kind
            raise failure from exc
        if connack.return_code:
            code = connack.return_code
            self.close()
            raise ConnectRefusedError(
                f"{where}: the broker refused the connection: {CONNACK_REFUSALS[code]}"
                f" (CONNACK return code {code})",
                code,
            )
        self.session_present = connack.session_present
        if options.keepalive_s:
            self._next_ping = self._loop.time() + options.keepalive_s
            self._timer = self._loop.call_at(self._next_ping, self._tick)

    async def lost(self) -> MqttError:
        """Wait until the connection has ended; return why."""
        return await asyncio.shield(self._lost)

    def close(self) -> None:
        """Send DISCONNECT (the broker then drops the will) and close; idempotent."""
        if self._transport is None or self._closing:
            return
        self._reason = self._reason or _ClosedError("closed by pagerd")
        self._outgoing += DISCONNECT_PACKET
        self._flush()
        self._closing = True
        self._transport.close()  # after what is buffered has been written

    async def disconnect(self, timeout_s: float = 1.0) -> None:
        """``close``, and wait until the connection has ended (at most ``timeout_s``)."""
        self.close()
        try:
            async with asyncio.timeout(timeout_s):
                await self.lost()
        except TimeoutError:
            self._fail(_ClosedError("closed by pagerd; the broker did not take the DISCONNECT"))

    @property
    def closed(self) -> bool:
        """True once the connection is ending or has ended: nothing more is sent."""
        return self._closing or self._lost.done()

    # --- receiving -------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._decoder.paused

    @property
    def largest_buffer(self) -> int:
        """The most bytes of incomplete packets ever kept between two reads."""
        return self._decoder.largest_buffer

    def pause_reading(self) -> None:
        """Read nothing more and hand on nothing more until ``resume_reading``.

        The broker's messages wait in the kernel's buffers, then in the broker, which
        keeps them for the session. While paused, silence from the broker is not held
        against it; pings are still sent, so the broker keeps the connection open.
        """
        if self._decoder.paused:
            return
        self._decoder.paused = True
        if self._transport is not None and not self._closing:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._decoder.paused:
            return
        self._decoder.paused = False
        self._last_received = self._loop.time()  # the silence was ours
        if self._transport is not None and not self._closing:
            self._loop.call_soon(self._feed, b"")  # what was read before the pause, first
            self._transport.resume_reading()

    def puback(self, packet_ids: Iterable[int]) -> None:
        """Acknowledge these QoS 1 messages, in one write."""
        self._send(puback_packets(packet_ids))

    # --- publishing ------------------------------------------------------------------------

    def publish_nowait(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
    ) -> bool:
        """Send without waiting for the broker; False if the connection has ended."""
        if self.closed:
            return False
        if qos == 0:
            return self._send(publish_packet(topic, payload, retain=retain))
        try:
            packet_id = self._new_packet_id()
        except MqttError:
            return False
        self._awaiting_puback[packet_id] = None
        return self._send(publish_packet(topic, payload, qos=1, retain=retain, packet_id=packet_id))

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish, and at QoS 1 wait for the broker's PUBACK; MqttError if it does not come."""
        if qos == 0:
            if not self.publish_nowait(topic, payload, retain=retain):
                raise self._reason or MqttError("not connected")
            return
        packet_id = self._new_packet_id()
        packet = publish_packet(topic, payload, qos=1, retain=retain, packet_id=packet_id)
        acked: asyncio.Future[None] = self._loop.create_future()
        self._awaiting_puback[packet_id] = acked
        if not self._send(packet):
            del self._awaiting_puback[packet_id]
            raise self._reason or MqttError("not connected")
        await self._answer(acked, "PUBACK")

    # --- subscribing -----------------------------------------------------------------------

    async def subscribe(self, topics: Sequence[tuple[str, int]]) -> tuple[int, ...]:
        """Subscribe to (topic filter, QoS) pairs; return the QoS the broker granted each.

        SubscribeRefusedError names each filter the broker refused (return code 0x80).
        """
        filters = [topic for topic, _ in topics]
        packet_id = self._new_packet_id()
        packet = subscribe_packet(packet_id, topics)
        granted: asyncio.Future[tuple[int, ...]] = self._loop.create_future()
        self._awaiting_suback[packet_id] = (granted, filters)
        if not self._send(packet):
            del self._awaiting_suback[packet_id]
            raise self._reason or MqttError("not connected")
        codes = await self._answer(granted, "SUBACK")
        refused = [
            topic for topic, code in zip(filters, codes, strict=True) if code == SUBSCRIBE_FAILURE
        ]
        if refused:
            raise SubscribeRefusedError(
                f"the broker refused the subscription to {', '.join(map(repr, refused))}"
            )
        return codes

    # --- the protocol's side: asyncio calls these ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        o = self._options
        will = o.will and (o.will.topic, o.will.payload, o.will.qos, o.will.retain)
        transport.write(
            connect_packet(
                o.client_id,
                clean_session=o.clean_session,
                keepalive_s=o.keepalive_s,
                will=will or None,
                username=o.username,
                password=o.password,
            )
        )

    def data_received(self, data: bytes) -> None:
        self._last_received = self._loop.time()
        self._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._reason is None:
            self._reason = (
                MqttError("the broker closed the connection")
                if exc is None
                else MqttError(f"connection lost: {exc}")
            )
        reason = self._reason
        if self._timer is not None:
            self._timer.cancel()
        self._lost.set_result(reason)
        _fail_waiter(self._connack, reason)
        for acked in self._awaiting_puback.values():
            if acked is not None:
                _fail_waiter(acked, reason)
        for granted, _ in self._awaiting_suback.values():
            _fail_waiter(granted, reason)

    # --- inside ----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._decoder.feed(data)
        except ProtocolError as error:
            self._fail(error)
        except Exception as error:  # noqa: BLE001 - a handler's, whatever it is: the connection ends
            failure = MqttError(f"a message handler failed: {error!r}")
            failure.__cause__ = error  # for the traceback of whoever logs the loss
            self._fail(failure)

    def _on_control(self, packet: ControlPacket) -> None:
        match packet:
            case PubAck(packet_id=packet_id):
                waiter = self._awaiting_puback.pop(packet_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            case ConnAck():
                if not self._connack.done():
                    self._connack.set_result(packet)
            case SubAck(packet_id=packet_id, return_codes=codes):
                entry = self._awaiting_suback.pop(packet_id, None)
                if entry is None:
                    return
                granted, filters = entry
                if len(codes) != len(filters):
                    raise ProtocolError(
                        f"malformed SUBACK: {len(codes)} return codes for {len(filters)} filters"
                    )
                if not granted.done():
                    granted.set_result(codes)
            case PingResp():
                pass  # its arrival is what counts (data_received)

    def _send(self, packet: bytes) -> bool:
        if self._transport is None or self._closing:
            return False
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing += packet
        return True

    def _flush(self) -> None:
        if not self._outgoing or self._transport is None or self._transport.is_closing():
            return
        data, self._outgoing = self._outgoing, bytearray()
        self._transport.write(data)

    def _new_packet_id(self) -> int:
        awaiting_puback, awaiting_suback = self._awaiting_puback, self._awaiting_suback
        if len(awaiting_puback) + len(awaiting_suback) >= MAX_PACKET_ID:
            error = MqttError(f"{MAX_PACKET_ID:,} packets await the broker's answer")
            self._fail(error)
            raise error
        while True:
            packet_id = self._next_id
            self._next_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in awaiting_puback and packet_id not in awaiting_suback:
                return packet_id

    async def _answer(self, future: asyncio.Future[T], what: str) -> T:
        """The broker's answer; if it does not come in time the broker is stuck: end it."""
        try:
            async with asyncio.timeout(self._options.timeout_s):
                return await future
        except TimeoutError:
            error = MqttError(f"no {what} within {self._options.timeout_s:g} s")
            self._fail(error)
            raise error from None

    def _tick(self) -> None:
        """Ping every keepalive; end the connection after 1.5 keepalives of silence."""
        keepalive = self._options.keepalive_s
        now = self._loop.time()
        silent_for = now - self._last_received
        if not self._decoder.paused and silent_for >= DEAD_AFTER_KEEPALIVES * keepalive:
            self._fail(
                KeepaliveTimeoutError(
                    f"nothing from the broker for {silent_for:.1f} s (keepalive {keepalive} s)"
                )
            )
            return
        if now >= self._next_ping:
            self._send(PINGREQ_PACKET)
            self._next_ping = now + keepalive
        deadline = self._next_ping
        if not self._decoder.paused:
            deadline = min(deadline, self._last_received + DEAD_AFTER_KEEPALIVES * keepalive)
        self._timer = self._loop.call_at(deadline, self._tick)

    def _fail(self, error: MqttError) -> None:
        """End the connection at once, for ``error``."""
        if self._reason is None:
            self._reason = error
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


def _os_reason(error: OSError) -> str:
    """ "Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 1883)"."""
    if isinstance(error, socket.gaierror) or not error.errno:
        return error.strerror or str(error) or type(error).__name__
    return os.strerror(error.errno)


def _fail_waiter(future: asyncio.Future[T], reason: MqttError) -> None:
    if not future.done():
        future.set_exception(reason)
        future.exception()  # marked retrieved: its waiter may have gone


async def connect_first(
    addresses: Sequence[tuple[str, int]], make: Callable[[], MqttClient]
) -> MqttClient:
    """Connect a new client to each address in turn until one connects.

    MqttError names what went wrong at each address when none did.
    """
    failures: list[MqttError] = []
    for host, port in addresses:
        client = make()
        try:
            await client.connect(host, port)
        except MqttError as error:
            failures.append(error)
            continue
        return client
    if len(failures) == 1:
        raise failures[0]
    every = ConnectError("; ".join(map(str, failures)))
    every.kind = failures[-1].kind
    raise every
