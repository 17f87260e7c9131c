"""pagerd's own PUBLISH decoding (mqtt_client): the same messages paho would make of the
same bytes, in the same order, and paho left to read whatever it does not take."""

from __future__ import annotations

import asyncio
import socket

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet

from pagerd.intake.mqtt_client import publish_at_most_once, split_publishes, take_messages
from tests.harness import eventually
from tests.mqtt_wire import publish_packet

PINGRESP = b"\xd0\x00"
Message = tuple[str, bytes, int | None]

topics = st.text(st.characters(exclude_characters="\x00+#", codec="utf-8"), min_size=1, max_size=40)
messages = st.lists(
    st.tuples(topics, st.binary(max_size=300), st.sampled_from([0, 1]), st.integers(1, 0xFFFF)),
    max_size=12,
)


def _packets(drawn: list[tuple[str, bytes, int, int]]) -> tuple[list[bytes], list[Message]]:
    packets = [publish_packet(t, p, mid, qos=qos) for t, p, qos, mid in drawn]
    expected = [(t, p, mid if qos else None) for t, p, qos, mid in drawn]
    return packets, expected


def _paho_decodes(packet: bytes) -> Message:
    """What paho makes of one whole packet (the fixed header is one byte plus the length)."""
    at = 1
    while packet[at] & 0x80:
        at += 1
    decoded = _packet.decode_publish(packet[0], bytearray(packet[at + 1 :]), mqtt.MQTTv311)
    return decoded.topic.decode(), bytes(decoded.payload), decoded.mid if decoded.qos else None


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_the_complete_publishes_at_the_head_are_taken_as_paho_decodes_them(
    drawn: list[tuple[str, bytes, int, int]], data: st.DataObject
) -> None:
    packets, expected = _packets(drawn)
    assert [_paho_decodes(p) for p in packets] == expected
    stream = b"".join(packets) + PINGRESP
    cut = data.draw(st.integers(0, len(stream)), label="bytes received so far")

    taken, used = split_publishes(bytearray(stream[:cut]))

    complete = 0
    while complete < len(packets) and sum(map(len, packets[: complete + 1])) <= cut:
        complete += 1
    assert taken == expected[:complete]
    assert used == sum(map(len, packets[:complete]))


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("not a PUBLISH", PINGRESP),
        ("QoS 2, which paho's state machine must answer", publish_packet("a/b", b"x", 7, qos=2)),
        ("an empty topic", b"\x32\x04\x00\x00\x00\x07"),
        ("a topic longer than the packet", b"\x32\x05\x00\x09a\x00\x07"),
        ("no room for the packet id", b"\x32\x03\x00\x01a"),
        ("a topic that is not UTF-8", b"\x32\x06\x00\x02\xff\xfe\x00\x07"),
        ("a remaining length over four bytes", b"\x32\xff\xff\xff\xff\x01"),
        ("only the first byte", b"\x32"),
    ],
)
def test_paho_is_left_what_is_not_a_well_formed_qos_0_or_1_publish(name: str, head: bytes) -> None:
    first = publish_packet("pagerd/alert/api", b'{"message": "m"}', 1)
    taken, used = split_publishes(bytearray(first + head + first))
    assert taken == [("pagerd/alert/api", b'{"message": "m"}', 1)], name
    assert used == len(first), name


def _connected(client: aiomqtt.Client, sock: socket.socket) -> None:
    """Hand ``sock`` to the client as paho's connect() would, and tell aiomqtt of it."""
    paho = client._client
    sock.setblocking(False)
    paho._sock = sock
    on_socket_open = paho.on_socket_open
    assert on_socket_open is not None
    on_socket_open(paho, None, sock)


async def test_messages_split_across_reads_arrive_once_each_and_in_order() -> None:
    """Through paho's own read loop, as aiomqtt runs it on the event loop: a packet cut
    by a read goes paho's way (``on_message``), the whole ones at a read's head go ours."""
    ours, pahos = socket.socketpair()
    client = aiomqtt.Client("127.0.0.1", 1883)  # never connected: only its reader is used
    paho = client._client
    received: list[Message] = []
    take_messages(client, lambda topic, payload, mid: received.append((topic, payload, mid)))
    by_paho = 0
    on_message = paho.on_message
    assert on_message is not None

    def counting(paho: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal by_paho
        by_paho += 1
        on_message(paho, userdata, message)

    paho.on_message = counting
    _connected(client, pahos)
    ours.setblocking(False)
    # Odd numbers at QoS 1 with their number as packet id, even ones at QoS 0.
    expected = [
        (f"pagerd/alert/svc-{n % 7}", b"x" * (n % 50), n if n % 2 else None) for n in range(1, 2001)
    ]
    stream = b"".join(publish_packet(t, p, mid or 0, qos=1 if mid else 0) for t, p, mid in expected)
    loop = asyncio.get_running_loop()
    try:
        # Odd-sized writes, so that reads end inside packets.
        for at in range(0, len(stream), 9_999):
            await loop.sock_sendall(ours, stream[at : at + 9_999])
            await asyncio.sleep(0)
        await eventually(lambda: len(received) >= len(expected), what="every message")
    finally:
        ours.close()
        pahos.close()
    assert received == expected
    assert 0 < by_paho < len(expected) // 10, "most are taken without paho, a few through it"


@settings(max_examples=100, deadline=None)
@given(topics, st.binary(max_size=20_000))
def test_an_event_publication_is_a_qos_0_publish_as_paho_reads_it(topic: str, body: bytes) -> None:
    async def queued() -> bytes:
        client = aiomqtt.Client("127.0.0.1", 1883)  # never connected: paho only queues
        publish_at_most_once(client, topic, body)
        return bytes(client._client._out_packet[-1]["packet"])

    packet = asyncio.run(queued())
    assert packet[0] == 0x30, "QoS 0, not retained, not a duplicate"
    assert _paho_decodes(packet) == (topic, body, None)


async def test_paused_reading_takes_nothing_more_from_the_socket_until_resumed() -> None:
    ours, pahos = socket.socketpair()
    client = aiomqtt.Client("127.0.0.1", 1883)  # never connected: only its reader is used
    received: list[Message] = []

    def handler(topic: str, payload: bytes, mid: int | None) -> None:
        received.append((topic, payload, mid))
        if len(received) == 100:
            reading.pause()

    reading = take_messages(client, handler)
    _connected(client, pahos)
    ours.setblocking(False)
    expected = [(f"pagerd/alert/svc-{n}", b"p" * 200, n) for n in range(1, 3001)]
    stream = b"".join(publish_packet(t, p, mid) for t, p, mid in expected)
    loop = asyncio.get_running_loop()
    sending = asyncio.create_task(loop.sock_sendall(ours, stream))
    try:
        await eventually(lambda: len(received) >= 100, what="the first hundred")
        await asyncio.sleep(0.2)  # nothing more may come: absence cannot be polled for
        held = len(received)
        assert held < len(expected) // 2, "what one read took, and no more"
        assert reading.paused

        reading.resume()
        await eventually(lambda: len(received) == len(expected), what="the rest")
        await sending
    finally:
        sending.cancel()
        ours.close()
        pahos.close()
    assert received == expected
