"""Just enough MQTT 3.1.1 on a raw socket for load generators that paho is too slow for."""

from __future__ import annotations

import struct

CONNACK_OK = b"\x20\x02\x00\x00"


def varint(n: int) -> bytes:
    """MQTT's variable-length "remaining length" encoding."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str) -> bytes:
    """CONNECT: protocol "MQTT" level 4 (3.1.1), clean session, keepalive 60 s."""
    header = b"\x00\x04MQTT\x04\x02\x00\x3c"
    body = header + struct.pack("!H", len(client_id)) + client_id.encode()
    return b"\x10" + varint(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, packet_id: int, *, dup: bool = False, qos: int = 1
) -> bytes:
    """PUBLISH at QoS ``qos`` (``dup`` marks a resend; a QoS 0 packet has no ``packet_id``)."""
    name = topic.encode()
    packet_id_bytes = struct.pack("!H", packet_id) if qos else b""
    body = struct.pack("!H", len(name)) + name + packet_id_bytes + payload
    command = 0x30 | (0x08 if dup else 0) | (qos << 1)
    return bytes((command,)) + varint(len(body)) + body
