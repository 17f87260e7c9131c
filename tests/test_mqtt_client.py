"""pagerd's own MQTT client against a real mosquitto: sessions, acknowledgement, the will,
keepalive, TLS, pausing, refusals, and a 50 MB PUBLISH read past without being held.

A relay between client and broker stands in for the network where a test must cut or
freeze it; a scripted broker only where mosquitto cannot be made to misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from pagerd.intake.mqtt_client import (
    ConnectError,
    ConnectOptions,
    ConnectRefusedError,
    KeepaliveTimeoutError,
    MqttClient,
    MqttError,
    ProtocolError,
    SubscribeRefusedError,
    Will,
    connect_first,
)
from tests.conftest import Secured
from tests.harness import Mosquitto, eventually, free_port
from tests.mqtt_wire import CONNACK_OK, publish_all, publish_packet

PINGREQ = b"\xc0\x00"
Message = tuple[str, bytes, int | None]


@dataclass
class Subscriber:
    """One MqttClient and everything it was handed; acknowledges at once if ``auto_ack``."""

    port: int
    client_id: str = "subscriber"
    clean_session: bool = False
    auto_ack: bool = True
    keepalive_s: int = 60
    will: Will | None = None
    tls: ssl.SSLContext | None = None
    max_message_bytes: int = 65_536
    timeout_s: float = 5.0
    username: str | None = None
    password: str | None = None
    on_each: Callable[[Subscriber], None] | None = None
    messages: list[Message] = field(default_factory=list)
    oversized: list[tuple[str, int, int | None]] = field(default_factory=list)

    def make(self) -> MqttClient:
        options = ConnectOptions(
            self.client_id,
            clean_session=self.clean_session,
            keepalive_s=self.keepalive_s,
            will=self.will,
            ssl=self.tls,
            max_message_bytes=self.max_message_bytes,
            timeout_s=self.timeout_s,
            username=self.username,
            password=self.password,
        )
        self.client = MqttClient(options, on_message=self._message, on_oversized=self._oversized)
        return self.client

    async def connect(self, port: int | None = None) -> MqttClient:
        client = self.make()
        await client.connect("127.0.0.1", port or self.port)
        return client

    def _message(self, topic: str, payload: bytes, packet_id: int | None) -> None:
        self.messages.append((topic, payload, packet_id))
        if self.auto_ack and packet_id is not None:
            self.client.puback([packet_id])
        if self.on_each is not None:
            self.on_each(self)

    def _oversized(self, topic: str, size: int, packet_id: int | None) -> None:
        self.oversized.append((topic, size, packet_id))
        if packet_id is not None:
            self.client.puback([packet_id])

    def payloads(self) -> list[bytes]:
        return [payload for _, payload, _ in self.messages]


@dataclass
class Relay:
    """A TCP relay between a client and the broker, which a test can freeze or cut."""

    broker_port: int
    port: int = field(default_factory=free_port)
    frozen: bool = False  # while set, what the broker sends is dropped
    from_client: bytearray = field(default_factory=bytearray)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop both connections at once, as a network failure or a crash would."""
        for writer in self._writers:
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.broker_port)
        self._writers += [writer, upstream]
        await asyncio.gather(
            self._pump(reader, upstream, from_client=True),
            self._pump(upstream_reader, writer, from_client=False),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool
    ) -> None:
        while data := await reader.read(65_536):
            if from_client:
                self.from_client += data
            elif self.frozen:
                continue
            writer.write(data)
        writer.close()


@contextlib.asynccontextmanager
async def scripted_broker(*answers: bytes) -> AsyncIterator[int]:
    """A broker that answers each thing a client sends with the next of ``answers``."""
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        for answer in answers:
            if not await reader.read(65_536):
                return
            writer.write(answer)
        await reader.read(65_536)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def publish(port: int, *messages: tuple[str, bytes, int]) -> None:
    """Publish (topic, payload, qos) with aiomqtt, a real third-party client."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="publisher") as client:
        for topic, payload, qos in messages:
            await client.publish(topic, payload, qos=qos)


# --- sessions and acknowledgement ----------------------------------------------------------


async def test_it_connects_subscribes_and_receives_qos_0_and_1(broker: Mosquitto) -> None:
    subscriber = Subscriber(broker.port)
    client = await subscriber.connect()
    try:
        assert not client.session_present, "a first connection has no session yet"
        assert await client.subscribe([("t/+", 1), ("zero/#", 0)]) == (1, 0)
        await publish(broker.port, ("t/a", b"one", 1), ("zero/x/y", b"two", 0), ("t/b", b"", 1))
        await eventually(lambda: len(subscriber.messages) == 3, what="three messages")
    finally:
        await client.disconnect()
    (t1, p1, id1), (t2, p2, id2), (t3, p3, id3) = subscriber.messages
    assert (t1, p1, t2, p2, id2, t3, p3) == ("t/a", b"one", "zero/x/y", b"two", None, "t/b", b"")
    assert id1 is not None
    assert id3 is not None
    assert id1 != id3


async def test_a_persistent_session_redelivers_only_what_was_not_acknowledged(
    broker: Mosquitto,
) -> None:
    first = Subscriber(broker.port, auto_ack=False)
    client = await first.connect()
    await client.subscribe([("t/+", 1)])
    await publish(broker.port, *((f"t/{n}", str(n).encode(), 1) for n in range(1, 11)))
    await eventually(lambda: len(first.messages) == 10, what="ten messages")
    client.puback(packet_id for _, payload, packet_id in first.messages[:5] if packet_id)
    await client.disconnect()
    await publish(broker.port, ("t/11", b"11", 1), ("t/12", b"12", 1))  # while away

    again = Subscriber(broker.port)
    client = await again.connect()
    try:
        assert client.session_present
        await eventually(lambda: len(again.messages) >= 7, what="what was not acknowledged")
    finally:
        await client.disconnect()
    # The unacknowledged come first, so the last one's arrival means nothing else came.
    assert again.payloads() == [str(n).encode() for n in range(6, 13)]


async def test_an_awaited_publish_returns_once_the_broker_has_it(broker: Mosquitto) -> None:
    watcher = Subscriber(broker.port, client_id="watcher")
    watching = await watcher.connect()
    await watching.subscribe([("cli/#", 1)])
    publisher = Subscriber(broker.port, client_id="cli", clean_session=True)
    client = await publisher.connect()
    try:
        await client.publish("cli/alert", b"down", qos=1)
        await client.publish("cli/zero", b"quick", qos=0)
        await eventually(lambda: len(watcher.messages) == 2, what="both at the watcher")
    finally:
        await client.disconnect()
        await watching.disconnect()
    assert watcher.payloads() == [b"down", b"quick"]


async def test_an_awaited_publish_fails_when_no_puback_comes(broker: Mosquitto) -> None:
    async with Relay(broker.port) as relay:
        publisher = Subscriber(relay.port, clean_session=True, timeout_s=0.5)
        client = await publisher.connect()
        relay.frozen = True
        with pytest.raises(MqttError, match=r"no PUBACK within 0\.5 s"):
            await client.publish("t/x", b"lost", qos=1)
        assert client.closed, "a broker that does not answer is given up"


async def test_each_address_is_tried_in_turn(broker: Mosquitto) -> None:
    dead = free_port()
    subscriber = Subscriber(broker.port)
    client = await connect_first([("127.0.0.1", dead), ("127.0.0.1", broker.port)], subscriber.make)
    await client.disconnect()
    assert client.address == ("127.0.0.1", broker.port)

    other = free_port()
    with pytest.raises(ConnectError) as caught:
        await connect_first([("127.0.0.1", dead), ("127.0.0.1", other)], subscriber.make)
    assert str(caught.value) == (
        f"127.0.0.1:{dead}: Connection refused; 127.0.0.1:{other}: Connection refused"
    )


# --- the will and keepalive ------------------------------------------------------------------


async def test_the_will_is_published_on_an_abrupt_loss_and_not_on_a_disconnect(
    broker: Mosquitto,
) -> None:
    watcher = Subscriber(broker.port, client_id="watcher")
    watching = await watcher.connect()
    await watching.subscribe([("w/status", 1)])
    will = Will("w/status", b"offline", qos=1, retain=True)
    async with Relay(broker.port) as relay:
        client = await Subscriber(relay.port, client_id="dies", will=will).connect()
        relay.cut()
        assert isinstance(await client.lost(), MqttError)
        await eventually(lambda: watcher.payloads() == [b"offline"], what="the will")

        client = await Subscriber(relay.port, client_id="leaves", will=will).connect()
        await client.disconnect()
    # The broker handled the DISCONNECT before this: a will would have come first.
    await publish(broker.port, ("w/status", b"marker", 1))
    await eventually(lambda: len(watcher.messages) == 2, what="the marker")
    await watching.disconnect()
    assert watcher.payloads() == [b"offline", b"marker"]


async def test_it_pings_every_keepalive_and_gives_up_on_a_silent_broker(broker: Mosquitto) -> None:
    async with Relay(broker.port) as relay:
        client = await Subscriber(relay.port, keepalive_s=1).connect()
        connected = len(relay.from_client)
        await eventually(
            lambda: relay.from_client[connected:].count(PINGREQ) >= 2, what="two PINGREQs"
        )
        assert not client.closed, "each ping was answered"

        relay.frozen = True
        frozen_at = time.monotonic()
        reason = await asyncio.wait_for(client.lost(), timeout=5)
        silent = time.monotonic() - frozen_at
    assert isinstance(reason, KeepaliveTimeoutError)
    assert "nothing from the broker for" in str(reason)
    # 1.5 keepalives after the last byte, which came at most a keepalive before the freeze.
    assert 0.5 <= silent <= 2.5, silent


async def test_a_pause_longer_than_the_keepalive_does_not_count_against_the_broker(
    broker: Mosquitto,
) -> None:
    subscriber = Subscriber(broker.port, keepalive_s=1)
    client = await subscriber.connect()
    await client.subscribe([("t/+", 1)])
    client.pause_reading()
    await publish(broker.port, ("t/a", b"while paused", 1))
    await asyncio.sleep(2.5)  # over 1.5 keepalives: only time can show the connection held
    assert not client.closed
    assert subscriber.messages == []
    client.resume_reading()
    await eventually(lambda: subscriber.payloads() == [b"while paused"], what="the message")
    await client.disconnect()


# --- pausing ---------------------------------------------------------------------------------


async def test_paused_reading_hands_on_nothing_more_until_resumed(broker: Mosquitto) -> None:
    first = await Subscriber(broker.port).connect()
    await first.subscribe([("backlog/+", 1)])
    await first.disconnect()
    expected = [f"message {n}".encode() for n in range(3_000)]
    await publish_all(
        broker.port,
        "backlog-publisher",
        [publish_packet(f"backlog/{n % 7}", p, n % 60_000 + 1) for n, p in enumerate(expected)],
    )

    def pause_at_100(subscriber: Subscriber) -> None:
        if len(subscriber.messages) == 100:
            subscriber.client.pause_reading()

    subscriber = Subscriber(broker.port, on_each=pause_at_100)
    client = await subscriber.connect()
    try:
        await eventually(lambda: len(subscriber.messages) >= 100, what="the first hundred")
        await asyncio.sleep(0.3)  # nothing more may come: absence cannot be polled for
        assert len(subscriber.messages) == 100, "not one more after the pause"
        assert client.paused

        client.resume_reading()
        await eventually(lambda: len(subscriber.messages) == 3_000, what="the rest")
    finally:
        await client.disconnect()
    assert subscriber.payloads() == expected


# --- size ------------------------------------------------------------------------------------


async def test_a_50_mb_publish_is_read_past_reported_and_acknowledged_never_held(
    broker: Mosquitto,
) -> None:
    """Through mosquitto (no message_size_limit in the tests' broker): the client keeps a
    few bytes of it at most, and after an acknowledgement it is not delivered again."""
    first = await Subscriber(broker.port, max_message_bytes=65_536).connect()
    await first.subscribe([("big/+", 1)])
    await first.disconnect()
    huge = 50_000_000
    await publish_all(
        broker.port,
        "big-publisher",
        [
            publish_packet("big/a", b"before", 1),
            publish_packet("big/b", b"\x00" * huge, 2),
            publish_packet("big/c", b"after", 3),
        ],
    )

    subscriber = Subscriber(broker.port, max_message_bytes=65_536)
    client = await subscriber.connect()
    try:
        await eventually(lambda: len(subscriber.messages) == 2, timeout=30, what="both small")
    finally:
        await client.disconnect()
    assert subscriber.payloads() == [b"before", b"after"]
    ((topic, size, packet_id),) = subscriber.oversized
    assert (topic, size) == ("big/b", huge)
    assert packet_id is not None
    assert client.largest_buffer < 65_536, client.largest_buffer

    again = Subscriber(broker.port)
    client = await again.connect()
    await publish(broker.port, ("big/d", b"marker", 1))
    await eventually(lambda: len(again.messages) == 1, what="the marker")
    await client.disconnect()
    assert again.oversized == [], "acknowledged: not delivered again"
    assert again.payloads() == [b"marker"]


# --- TLS, credentials, refusals --------------------------------------------------------------


async def test_tls_with_a_private_ca_and_a_login(secured: Secured) -> None:
    trusting = ssl.create_default_context(cafile=secured.ca)
    subscriber = Subscriber(secured.tls_port, tls=trusting, username="alice", password="s3cret")
    client = await subscriber.connect()
    try:
        await client.subscribe([("secure/+", 1)])
        async with aiomqtt.Client(
            "127.0.0.1",
            secured.broker.port,
            identifier="plain",
            username="alice",
            password="s3cret",
        ) as plain:
            await plain.publish("secure/x", b"over TLS", qos=1)
        await eventually(lambda: subscriber.payloads() == [b"over TLS"], what="the message")
    finally:
        await client.disconnect()

    untrusting = Subscriber(secured.tls_port, tls=ssl.create_default_context())
    with pytest.raises(ConnectError, match="TLS certificate not trusted"):
        await untrusting.connect()


@pytest.mark.parametrize(
    ("user", "password", "client_id", "says", "code"),
    [
        ("alice", "wrong", "x", "not authorized", 5),
        (None, None, "x", "not authorized", 5),
        ("alice", "s3cret", "", "identifier rejected", 2),
    ],
)
async def test_a_refused_connect_says_why(  # noqa: PLR0917 - the parameters of one table
    secured: Secured,
    user: str | None,
    password: str | None,
    client_id: str,
    says: str,
    code: int,
) -> None:
    port = secured.broker.port
    subscriber = Subscriber(
        port, client_id=client_id, clean_session=True, username=user, password=password
    )
    with pytest.raises(ConnectRefusedError) as caught:
        await subscriber.connect()
    assert caught.value.return_code == code
    assert str(caught.value) == (
        f"127.0.0.1:{port}: the broker refused the connection: {says} (CONNACK return code {code})"
    )


async def test_a_refused_subscription_names_its_topic() -> None:
    """mosquitto 2.0 grants what its ACL forbids (and then delivers nothing), so a
    scripted broker answers: the first filter granted, the second refused."""
    async with scripted_broker(CONNACK_OK, b"\x90\x04\x00\x01\x01\x80") as port:
        client = await Subscriber(port).connect()
        with pytest.raises(SubscribeRefusedError, match="subscription to 'secret/#'"):
            await client.subscribe([("open/+", 1), ("secret/#", 1)])
        client.close()


async def test_a_malformed_packet_ends_the_connection_with_its_reason() -> None:
    qos_2 = b"\x34\x05\x00\x01a\x00\x07"
    async with scripted_broker(CONNACK_OK + qos_2) as port:
        client = await Subscriber(port).connect()
        reason = await asyncio.wait_for(client.lost(), timeout=5)
    assert isinstance(reason, ProtocolError)
    assert str(reason) == "QoS 2 PUBLISH: pagerd subscribes at QoS 1 at most"


async def test_a_handler_that_raises_ends_the_connection_saying_so(broker: Mosquitto) -> None:
    def explode(_: Subscriber) -> None:
        raise RuntimeError("bug")

    subscriber = Subscriber(broker.port, on_each=explode)
    client = await subscriber.connect()
    await client.subscribe([("t/+", 1)])
    await publish(broker.port, ("t/a", b"x", 1))
    reason = await asyncio.wait_for(client.lost(), timeout=5)
    assert str(reason) == "a message handler failed: RuntimeError('bug')"
    assert isinstance(reason.__cause__, RuntimeError)


SHIPPED_CONF = Path(__file__).resolve().parent.parent / "config" / "mosquitto.conf"


async def test_the_shipped_broker_limit_drops_a_larger_message_and_acknowledges_it(
    tmp_path: Path,
) -> None:
    """config/mosquitto.conf's message_size_limit, in mosquitto 2.0 itself: a message of
    the limit is delivered, one byte more is acknowledged to its publisher and dropped."""
    (line,) = [x for x in SHIPPED_CONF.read_text().splitlines() if x.startswith("message_size")]
    limit = int(line.split()[1])
    broker = Mosquitto(tmp_path / "broker", extra_conf=line + "\n")
    broker.directory.mkdir()
    await broker.start()
    try:
        subscriber = Subscriber(broker.port)  # refuses over 64 KiB: reports the size
        client = await subscriber.connect()
        await client.subscribe([("big/+", 1)])
        # publish_all returns once the broker acknowledged all three.
        await publish_all(
            broker.port,
            "big-publisher",
            [
                publish_packet("big/over", b"o" * (limit + 1), 1),
                publish_packet("big/at", b"a" * limit, 2),
                publish_packet("big/small", b"s", 3),
            ],
        )
        await eventually(lambda: len(subscriber.messages) == 1, what="the small one")
        await client.disconnect()
    finally:
        broker.stop()
    assert subscriber.oversized[0][:2] == ("big/at", limit)
    assert [topic for topic, _, _ in subscriber.oversized] == ["big/at"]
