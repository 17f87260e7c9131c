"""MQTT 3.1.1 packets, as a client sends and receives them: encoders and a stream decoder.

Pure: no sockets, no asyncio. ``Decoder`` is fed the bytes of one connection as they
arrive, in pieces cut anywhere, and hands on each packet from the broker as soon as it
is whole. Section numbers (§2.2, [MQTT-3.3.2-2]) are those of the OASIS standard,
http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Control packet types (§2.2.1), the high nibble of the first byte.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
}

MAX_REMAINING_LENGTH = 268_435_455  # four bytes of seven bits (§2.2.3)
MAX_STRING_BYTES = 65_535  # a two-byte length prefix (§1.5.3)
MAX_PACKET_ID = 65_535
SUBSCRIBE_FAILURE = 0x80  # a SUBACK return code (§3.9.3)
# CONNACK return codes 1-5 (§3.2.2.3), as people read them.
CONNACK_REFUSALS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
# The largest SUBACK accepted: one return code per topic filter; pagerd asks for a few.
_MAX_SUBACK_LENGTH = 2 + 1024

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


class MqttError(Exception):
    """The MQTT connection could not be made, or failed; ``kind`` is short, for a metric."""

    kind = "lost"


class ProtocolError(MqttError):
    """The broker sent something MQTT 3.1.1 does not allow; the connection must end."""

    kind = "protocol"


# --- encoding ------------------------------------------------------------------------------


def remaining_length(length: int) -> bytes:
    """The fixed header's remaining length: seven bits a byte, least significant first."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"a packet's remaining length must be 0..{MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        out.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(out)


def _string(text: str, what: str) -> bytes:
    """A UTF-8 string with its two-byte length (§1.5.3)."""
    if "\x00" in text:
        raise ValueError(f"{what} must not contain U+0000")
    return _binary(text.encode(), what)


def _binary(data: bytes, what: str) -> bytes:
    if len(data) > MAX_STRING_BYTES:
        raise ValueError(f"{what} is {len(data)} bytes, over MQTT's {MAX_STRING_BYTES}")
    return len(data).to_bytes(2, "big") + data


def check_topic_name(topic: str) -> None:
    """A topic to publish to: not empty, no wildcard, no U+0000 ([MQTT-3.3.2-2], §4.7.3)."""
    if not topic:
        raise ValueError("a topic name must not be empty")
    if "+" in topic or "#" in topic:
        raise ValueError(f"topic name {topic!r} must not contain the wildcards + or #")


def check_topic_filter(topic_filter: str) -> None:
    """A topic filter to subscribe to: ``+`` a whole level, ``#`` a whole last level (§4.7.1)."""
    if not topic_filter:
        raise ValueError("a topic filter must not be empty")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"topic filter {topic_filter!r}: # must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic_filter!r}: + must be a whole level")


def connect_packet(
    client_id: str,
    *,
    clean_session: bool,
    keepalive_s: int,
    will: tuple[str, bytes, int, bool] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT (§3.1): protocol "MQTT" level 4; ``will`` is (topic, payload, qos, retain)."""
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError("keepalive must be 0..65535 seconds")
    if not client_id and not clean_session:
        raise ValueError("an empty client id needs a clean session [MQTT-3.1.3-7]")
    if password is not None and username is None:
        raise ValueError("a password needs a user name [MQTT-3.1.2-22]")
    flags = 0x02 if clean_session else 0
    payload = _string(client_id, "client id")
    if will is not None:
        topic, message, qos, retain = will
        check_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ValueError("the will's QoS must be 0, 1 or 2")
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += _string(topic, "will topic") + _binary(message, "will message")
    if username is not None:
        flags |= 0x80
        payload += _string(username, "user name")
    if password is not None:
        flags |= 0x40
        payload += _binary(password.encode(), "password")
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + keepalive_s.to_bytes(2, "big") + payload
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topics: Sequence[tuple[str, int]]) -> bytes:
    """SUBSCRIBE (§3.8): each (topic filter, requested QoS)."""
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic filter [MQTT-3.8.3-3]")
    body = bytearray(_packet_id(packet_id))
    for topic_filter, qos in topics:
        check_topic_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS for {topic_filter!r} must be 0, 1 or 2")
        body += _string(topic_filter, "topic filter") + bytes((qos,))
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    packet_id: int | None = None,
    dup: bool = False,
) -> bytes:
    """PUBLISH (§3.3); a QoS 0 message has no packet id and is never a duplicate."""
    check_topic_name(topic)
    name = _string(topic, "topic name")
    if qos == 0:
        if packet_id is not None or dup:
            raise ValueError("a QoS 0 PUBLISH has no packet id and no DUP flag [MQTT-3.3.1-2]")
        head = name
    elif qos == 1:
        if packet_id is None:
            raise ValueError("a QoS 1 PUBLISH needs a packet id")
        head = name + _packet_id(packet_id)
    else:
        raise ValueError("pagerd publishes at QoS 0 or 1")
    first = 0x30 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    return bytes((first,)) + remaining_length(len(head) + len(payload)) + head + payload


def puback_packets(packet_ids: Iterable[int]) -> bytes:
    """PUBACK (§3.4) for each id, concatenated: one write acknowledges them all."""
    out = bytearray()
    for packet_id in packet_ids:
        out += b"\x40\x02" + _packet_id(packet_id)
    return bytes(out)


def _packet_id(packet_id: int) -> bytes:
    if not 1 <= packet_id <= MAX_PACKET_ID:
        raise ValueError(f"a packet id must be 1..{MAX_PACKET_ID} [MQTT-2.3.1-1]")
    return packet_id.to_bytes(2, "big")


# --- decoding ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


ControlPacket = ConnAck | PubAck | SubAck | PingResp
# (topic, payload, packet id or None for QoS 0: a QoS 0 message has no packet id, and a
# PUBACK for id 0 is a protocol error the broker disconnects for)
PublishHandler = Callable[[str, bytes, int | None], None]
# (topic, payload size in bytes, packet id or None)
OversizedHandler = Callable[[str, int, int | None], None]
ControlHandler = Callable[[ControlPacket], None]


class Decoder:
    """The packets a broker sends a client, decoded from a byte stream fed in any pieces.

    Invariants: a PUBLISH whose payload is over ``max_payload`` is never held whole:
    once its topic and packet id are in, the rest is dropped as it arrives and
    ``on_oversized`` is called when its last byte has passed. Otherwise nothing is kept
    but the head of one incomplete packet, so the buffer never holds more than the
    largest allowed packet plus one piece fed. Handlers are called in the order of
    the packets, and none while ``paused``: what is left waits for ``feed(b"")``.
    """

    def __init__(
        self,
        max_payload: int,
        on_publish: PublishHandler,
        on_oversized: OversizedHandler,
        on_control: ControlHandler,
    ) -> None:
        self.max_payload = max_payload
        self.paused = False
        self.connected = False  # once CONNACK came: it must be the first packet [MQTT-3.2.0-1]
        self.largest_buffer = 0  # the most bytes ever kept between two feeds
        self._on_publish = on_publish
        self._on_oversized = on_oversized
        self._on_control = on_control
        self._buffer = bytearray()
        self._need = 0  # the buffer's length below which no packet can be complete
        self._discard = 0  # bytes of an oversized PUBLISH still to drop
        self._oversized: tuple[str, int, int | None] | None = None  # reported once dropped

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed on."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream; raises ProtocolError on a malformed packet."""
        if self._discard:
            dropped = min(len(data), self._discard)
            self._discard -= dropped
            if self._discard:
                return
            data = data[dropped:]
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._need or self.paused:
                self._note_buffered()
                return
            data = bytes(self._buffer)
            self._buffer.clear()
        if self._oversized is not None:  # its last byte has passed: report it, in order
            if self.paused:
                self._buffer += data
                self._note_buffered()
                return
            topic, size, packet_id = self._oversized
            self._oversized = None
            self._on_oversized(topic, size, packet_id)
        taken = self._decode(data)
        if taken < len(data) and not self._discard:
            self._buffer += memoryview(data)[taken:]
            self._note_buffered()

    def _note_buffered(self) -> None:
        self.largest_buffer = max(self.largest_buffer, len(self._buffer))

    def _decode(self, data: bytes) -> int:  # noqa: PLR0915 - the loop over every message, one frame
        """Hand on the whole packets at the head of ``data``; return the bytes taken."""
        on_publish = self._on_publish
        max_payload = self.max_payload
        start, end = 0, len(data)
        self._need = 0
        while start < end and not self.paused:
            first = data[start]
            # The remaining length (§2.2.3): one to four bytes.
            at = start + 1
            length = shift = 0
            while True:
                if at >= end:
                    return start
                digit = data[at]
                at += 1
                length |= (digit & 0x7F) << shift
                if digit < 0x80:
                    break
                shift += 7
                if shift == 28:
                    raise ProtocolError("malformed packet: a remaining length over four bytes")
            packet_end = at + length
            if first & 0xF0 != 0x30:
                self._check_control_header(first, length)
                if packet_end > end:
                    self._need = packet_end - start
                    return start
                self._on_control(self._control(first >> 4, data[at:packet_end]))
                start = packet_end
                continue
            # PUBLISH (§3.3): topic, packet id if QoS 1, payload.
            if not self.connected:
                raise ProtocolError("PUBLISH before CONNACK [MQTT-3.2.0-1]")
            qos = (first >> 1) & 3
            if qos > 1:
                raise ProtocolError(
                    f"QoS {qos} PUBLISH: pagerd subscribes at QoS 1 at most"
                    if qos == 2
                    else "malformed PUBLISH: QoS 3 [MQTT-3.3.1-4]"
                )
            if qos == 0 and first & 0x08:
                raise ProtocolError("malformed PUBLISH: DUP set at QoS 0 [MQTT-3.3.1-2]")
            if length < 2:
                raise ProtocolError("malformed PUBLISH: no room for its topic")
            if at + 2 > end:
                return start
            payload_at = at + 2 + (data[at] << 8 | data[at + 1]) + (2 if qos else 0)
            if payload_at > packet_end:
                raise ProtocolError("malformed PUBLISH: its topic runs past the packet")
            if payload_at > end:
                self._need = payload_at - start
                return start
            topic, packet_id = _topic_and_id(data, at, payload_at, qos)
            size = packet_end - payload_at
            if size > max_payload:
                if packet_end <= end:
                    self._on_oversized(topic, size, packet_id)
                    start = packet_end
                    continue
                self._discard = packet_end - end
                self._oversized = (topic, size, packet_id)
                return end
            if packet_end > end:
                self._need = packet_end - start
                return start
            on_publish(topic, data[payload_at:packet_end], packet_id)
            start = packet_end
        return start

    def _check_control_header(self, first: int, length: int) -> None:
        """Refuse a packet a broker may not send, or of the wrong size, before it is read."""
        kind, flags = first >> 4, first & 0x0F
        name = PACKET_NAMES.get(kind, f"reserved type {kind}")
        if kind not in (CONNACK, PUBACK, SUBACK, PINGRESP):
            raise ProtocolError(f"unexpected {name} from the broker")
        if flags:
            raise ProtocolError(f"malformed {name}: reserved flags {flags:#x} [MQTT-2.2.2-2]")
        if (kind == CONNACK) == self.connected:
            raise ProtocolError(
                "a second CONNACK" if self.connected else f"{name} before CONNACK [MQTT-3.2.0-1]"
            )
        fits = {
            CONNACK: length == 2,
            PUBACK: length == 2,
            SUBACK: 3 <= length <= _MAX_SUBACK_LENGTH,
            PINGRESP: length == 0,
        }[kind]
        if not fits:
            raise ProtocolError(f"malformed {name}: remaining length {length}")

    def _control(self, kind: int, body: bytes) -> ControlPacket:
        if kind == CONNACK:
            if body[0] & 0xFE:
                raise ProtocolError(f"malformed CONNACK: reserved flags {body[0]:#x}")
            if body[1] > max(CONNACK_REFUSALS):
                raise ProtocolError(f"malformed CONNACK: unknown return code {body[1]}")
            self.connected = True
            return ConnAck(bool(body[0] & 1), body[1])
        if kind == PINGRESP:
            return PingResp()
        packet_id = _nonzero_id(body, PACKET_NAMES[kind])
        if kind == PUBACK:
            return PubAck(packet_id)
        codes = tuple(body[2:])
        for code in codes:
            if code not in (0, 1, 2, SUBSCRIBE_FAILURE):
                raise ProtocolError(f"malformed SUBACK: return code {code:#x}")
        return SubAck(packet_id, codes)


def _topic_and_id(data: bytes, at: int, payload_at: int, qos: int) -> tuple[str, int | None]:
    """A PUBLISH's topic and packet id, checked as [MQTT-4.7.3-1], [MQTT-3.3.2-2] ask."""
    topic_end = payload_at - 2 if qos else payload_at
    try:
        topic = data[at + 2 : topic_end].decode()
    except UnicodeDecodeError:
        raise ProtocolError("malformed PUBLISH: its topic is not UTF-8") from None
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ProtocolError(f"malformed PUBLISH: topic name {topic!r}")
    if not qos:
        return topic, None
    packet_id = data[topic_end] << 8 | data[topic_end + 1]
    if not packet_id:
        raise ProtocolError("malformed PUBLISH: packet id 0 [MQTT-2.3.1-1]")
    return topic, packet_id


def _nonzero_id(body: bytes, name: str) -> int:
    packet_id = body[0] << 8 | body[1]
    if not packet_id:
        raise ProtocolError(f"malformed {name}: packet id 0 [MQTT-2.3.1-1]")
    return packet_id
