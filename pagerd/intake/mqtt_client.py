"""The parts of aiomqtt and paho that pagerd reaches into, and why, in one place.

aiomqtt 2.5 has no public API for manual acknowledgement (aiomqtt issue #345), and its
message iterator costs a task and an ``asyncio.wait`` per message. paho, underneath,
reads each packet with three or more ``recv()`` calls and builds a message object with
its own locks and logging for each: at thousands of alerts a second those were the
larger part of pagerd's event loop. The functions here are the only code that touches
the paho client (``client._client``) or aiomqtt's insides; ``mqtt.py`` keeps the rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as mqtt

# handler(topic, payload, packet id to acknowledge, or None for a QoS 0 message: it has
# no packet id, and a PUBACK for id 0 is a protocol error the broker disconnects for)
MessageHandler = Callable[[str, bytes, int | None], None]

_PUBLISH = 0x30  # MQTT 3.1.1 §2.2.1: the packet type in the first byte's high nibble
_QOS_2 = 2


def prepare(client: aiomqtt.Client) -> None:
    """Set up an unconnected client the way pagerd needs it.

    Manual acknowledgement: pagerd sends a PUBACK only after the effect is committed.
    No ``on_publish`` callback: pagerd never awaits a publication, and without it paho
    builds no reason code and properties objects for each one (a third of its time
    writing). aiomqtt needs the callback only for its own awaited ``publish()``.
    """
    paho = client._client
    assert paho._protocol in (mqtt.MQTTv31, mqtt.MQTTv311), "PUBLISH is decoded as MQTT 3.1.1"
    paho.manual_ack_set(True)
    paho.on_publish = None


class Reading:
    """Reading from the broker, which the caller may pause and resume.

    Paused, pagerd takes nothing more from the socket: the broker's messages wait in
    the kernel's buffers and then in the broker, which keeps them for the session.
    The broker's answer to a ping waits too, so a pause longer than the keepalive
    ends the connection; what was not acknowledged is then delivered again.
    """

    def __init__(self) -> None:
        self.paused = False
        self._reader: _PublishReader | None = None

    def pause(self) -> None:
        self.paused = True
        if self._reader is not None:
            self._reader.stop_reading()

    def resume(self) -> None:
        self.paused = False
        if self._reader is not None:
            self._reader.start_reading()

    def _opened(self, reader: _PublishReader) -> None:
        """A new connection's socket: read it now unless paused."""
        self._reader = reader
        if not self.paused:
            reader.start_reading()


def take_messages(client: aiomqtt.Client, handler: MessageHandler) -> Reading:
    """Have each message the client receives reach ``handler`` on the event loop.

    Call before connecting: the broker sends a persistent session's backlog at once.
    Complete PUBLISH packets are decoded straight from the socket's buffer (see
    ``_PublishReader``); paho's own path, through ``on_message``, takes the rest (a
    packet split across two reads). Both run in the socket's reader callback on the
    event loop, so the handler may post to the runtime directly; aiomqtt's queue
    stays empty. Returns the switch to pause and resume the reading.
    """
    paho = client._client
    reading = Reading()

    def on_message(_paho: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        handler(message.topic, bytes(message.payload), message.mid if message.qos else None)

    paho.on_message = on_message
    aiomqtt_on_open = paho.on_socket_open
    assert aiomqtt_on_open is not None, "aiomqtt registers the socket with the event loop"

    def on_socket_open(_paho: mqtt.Client, userdata: Any, sock: Any) -> None:
        # paho calls this from the thread that connects. aiomqtt registers its reader
        # and its keepalive task with call_soon_threadsafe; ours comes after it and
        # takes the reader's place.
        reader = _PublishReader(client, sock, handler)
        paho._sock = reader
        aiomqtt_on_open(_paho, userdata, sock)
        client._loop.call_soon_threadsafe(reading._opened, reader)

    paho.on_socket_open = on_socket_open
    return reading


def split_publishes(buffer: bytearray | bytes) -> tuple[list[tuple[str, bytes, int | None]], int]:
    """The complete QoS 0 and 1 PUBLISH packets at the head of ``buffer``, decoded.

    Returns ``(topic, payload, packet id or None)`` for each, and how many bytes they
    took. Stops at the first packet that is anything else, incomplete, QoS 2 or not
    well formed: paho reads that one, and answers a malformed one as it always has.
    MQTT 3.1.1 §2.2 (fixed header, remaining length) and §3.3 (PUBLISH).
    """
    messages: list[tuple[str, bytes, int | None]] = []
    start, end = 0, len(buffer)
    while start < end:
        command = buffer[start]
        qos = (command >> 1) & 3
        if command & 0xF0 != _PUBLISH or qos >= _QOS_2:
            break
        length, multiplier, at = 0, 1, start + 1
        while at < end and at - start <= 4:  # the remaining length has at most 4 bytes
            digit = buffer[at]
            length += (digit & 0x7F) * multiplier
            multiplier *= 128
            at += 1
            if not digit & 0x80:
                break
        else:
            break  # incomplete or too long
        packet_end = at + length
        if packet_end > end or length < 2:
            break
        topic_end = at + 2 + ((buffer[at] << 8) | buffer[at + 1])
        payload_at = topic_end + 2 if qos else topic_end
        if payload_at > packet_end or topic_end == at + 2:
            break  # the topic overruns the packet, or is empty: malformed
        try:
            topic = bytes(buffer[at + 2 : topic_end]).decode()
        except UnicodeDecodeError:
            break
        mid = (buffer[topic_end] << 8) | buffer[topic_end + 1] if qos else None
        messages.append((topic, bytes(buffer[payload_at:packet_end]), mid))
        start = packet_end
    return messages, start


class _PublishReader:
    """paho's socket, read 64 KiB at a time, with the PUBLISH packets taken out first.

    paho reads a packet with at least three ``recv()`` calls (the command byte, each
    length byte, the rest) and one packet per readiness event. Here one ``recv()``
    fills a buffer; whenever paho is between packets, the complete PUBLISH packets at
    the buffer's head go to the handler, and paho is given the rest byte for byte as
    if from the socket. When nothing is left for it, paho is told the socket would
    block, and the next readiness event reads on.
    """

    READ_SIZE = 64 * 1024

    def __init__(self, client: aiomqtt.Client, sock: Any, handler: MessageHandler) -> None:
        self._client = client
        self._paho = client._client
        self._sock = sock
        self._handler = handler
        self._buffer = bytearray()
        self._reading = False

    # --- the event loop's side: aiomqtt's reader callback, which this replaces, and a pause

    def start_reading(self) -> None:
        fileno = self._sock.fileno()
        if fileno < 0:
            return  # closed meanwhile
        self._reading = True
        loop = self._client._loop
        loop.add_reader(fileno, self._on_readable)
        loop.call_soon(self._on_readable)  # what the buffers already hold is not news to epoll

    def stop_reading(self) -> None:
        self._reading = False
        fileno = self._sock.fileno()
        if fileno >= 0:
            self._client._loop.remove_reader(fileno)

    def _on_readable(self) -> None:
        # As aiomqtt's callback: read while the buffers hold bytes (an SSL socket keeps
        # decrypted bytes of its own, paho issue #131), and a failure is a lost
        # connection, for the session to notice and reconnect.
        try:
            while self._reading:
                self._paho.loop_read()
                if self.pending() <= 0:
                    break
        except Exception as error:  # noqa: BLE001 - paho's and the socket's, whatever they are
            if not self._client._disconnected.done():
                self._client._disconnected.set_exception(error)

    # --- paho's side: the socket it reads

    def recv(self, size: int) -> bytes:
        between_packets = self._paho._in_packet["command"] == 0
        if between_packets and self._buffer:
            self._take_publishes()
        if not self._buffer:
            if not self._reading:
                raise BlockingIOError  # paused: the socket keeps the rest
            data = self._sock.recv(self.READ_SIZE)  # BlockingIOError passes through to paho
            if not data:
                return b""  # the connection was closed
            self._buffer += data
            if between_packets:
                self._take_publishes()
                if not self._buffer:
                    raise BlockingIOError  # paho: nothing more to read for now
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]  # cheap: a bytearray drops its head without copying
        return chunk

    def _take_publishes(self) -> None:
        messages, taken = split_publishes(self._buffer)
        if not taken:
            return
        del self._buffer[:taken]
        # paho pings the broker, and gives up on it, by when it last received bytes.
        self._paho._last_bytes_received = mqtt.time_func()
        handler = self._handler
        for topic, payload, mid in messages:
            handler(topic, payload, mid)

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)  # an SSL socket's own buffer
        return len(self._buffer) + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def disconnected(client: aiomqtt.Client) -> aiomqtt.MqttError:
    """Wait until the connection is lost; return why, for the caller to retry."""
    try:
        await asyncio.shield(client._disconnected)
    except Exception as error:  # noqa: BLE001 - paho's and the socket's, whatever they are
        return aiomqtt.MqttError(f"disconnected: {error}")
    return aiomqtt.MqttError("disconnected by the broker")


def puback(client: aiomqtt.Client, mids: list[int]) -> None:
    """Send the PUBACKs for QoS 1 messages we have committed, in one write.

    paho's ``ack(mid, 1)`` queues one packet per message, each its own send(); a commit
    round releases thousands at once. A PUBACK is four bytes (MQTT 3.1.1 §3.4): several
    concatenated are several PUBACKs. ``prepare`` switched the client to manual
    acks, so paho acknowledges nothing on its own.
    """
    packets = bytearray()
    for mid in mids:
        packets += b"\x40\x02" + mid.to_bytes(2, "big")
    client._client._packet_queue(mqtt.PUBACK, packets, 0, 0)


def publish_nowait(
    client: aiomqtt.Client, topic: str, payload: bytes, *, qos: int, retain: bool
) -> None:
    """Queue a publication without waiting for the broker's ack (paho queues and sends)."""
    client._client.publish(topic, payload, qos=qos, retain=retain)


class _Unawaited:
    """The message info paho marks as published after writing a QoS 0 packet; nobody waits."""

    def _set_as_published(self) -> None:
        pass


_UNAWAITED = cast("mqtt.MQTTMessageInfo", _Unawaited())


def publish_at_most_once(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
    """Queue a QoS 0 publication, not retained, built here (MQTT 3.1.1 §3.3).

    paho's ``publish()`` makes a message-info object with its own lock and condition
    for every message, which nobody here awaits: for the timeline events of every
    page that was a tenth of the event loop at 1,000 new incidents a second.
    """
    name = topic.encode()
    length = 2 + len(name) + len(payload)
    packet = bytearray(b"\x30")  # PUBLISH, QoS 0, not a duplicate, not retained
    while True:  # the remaining length, 7 bits a byte, least significant first
        length, digit = divmod(length, 128)
        packet.append(digit | (0x80 if length else 0))
        if not length:
            break
    packet += len(name).to_bytes(2, "big")
    packet += name
    packet += payload
    client._client._packet_queue(mqtt.PUBLISH, packet, 0, 0, _UNAWAITED)
