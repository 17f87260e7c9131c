"""Just enough MQTT 3.1.1 on a raw socket for load generators that paho is too slow for."""

from __future__ import annotations

import asyncio
import struct

CONNACK_OK = b"\x20\x02\x00\x00"
PUBACK_BYTES = 4
DISCONNECT = b"\xe0\x00"


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


async def publish_all(port: int, client_id: str, packets: list[bytes]) -> None:
    """Connect, send every (QoS 1) packet in one go, and return once each has its PUBACK.

    An order of magnitude faster than paho for a test that needs a large backlog.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(connect_packet(client_id))
        if await reader.readexactly(len(CONNACK_OK)) != CONNACK_OK:
            raise ConnectionError("the broker refused the connection")
        writer.write(b"".join(packets))
        await reader.readexactly(PUBACK_BYTES * len(packets))
        writer.write(DISCONNECT)
        await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()
