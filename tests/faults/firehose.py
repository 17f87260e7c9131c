"""A QoS 1 publisher on a raw socket that republishes whatever the broker did not PUBACK.

aiomqtt cannot say which publications a dead connection took with it; this one
knows, because it keeps every unacknowledged message until its PUBACK arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from dataclasses import dataclass, field

from tests.mqtt_wire import CONNACK_OK, connect_packet, publish_packet

PUBACK = 0x40


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_id: str
) -> None:
    writer.write(connect_packet(client_id))
    if await reader.readexactly(4) != CONNACK_OK:
        raise ConnectionError("the broker refused the connection")


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    key: str  # what the test counts by (the alert_id)


def alert(service: str, alert_id: str, prefix: str = "pagerd") -> Message:
    """An alert with a unique ``alert_id`` for ``service``."""
    body = json.dumps({"message": f"fault {alert_id}", "alert_id": alert_id}).encode()
    return Message(f"{prefix}/alert/{service}", body, alert_id)


@dataclass
class Firehose:
    """Publishes ``messages`` at ``rate`` per second; survives broker restarts."""

    port: int
    messages: list[Message]
    rate: float
    acked: set[str] = field(default_factory=set)
    sent_at: dict[str, float] = field(default_factory=dict)  # key -> first write, monotonic
    reconnects: int = 0
    republished: int = 0
    _pending: dict[int, Message] = field(default_factory=dict)
    _next_id: int = 0

    def _packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._pending:
                return self._next_id

    async def run(self, timeout: float) -> None:
        """Send everything and wait until the broker acknowledged all of it."""
        async with asyncio.timeout(timeout):
            sent = 0
            started = time.monotonic()
            while sent < len(self.messages) or self._pending:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    await _handshake(reader, writer, f"firehose-{id(self)}")
                    acks = asyncio.create_task(self._read_acks(reader))
                    try:
                        for packet_id, message in list(self._pending.items()):
                            self.republished += 1
                            writer.write(
                                publish_packet(message.topic, message.payload, packet_id, dup=True)
                            )
                        while sent < len(self.messages):
                            due = min(
                                len(self.messages), int((time.monotonic() - started) * self.rate)
                            )
                            while sent < due and len(self._pending) < 5000:
                                message = self.messages[sent]
                                packet_id = self._packet_id()
                                self._pending[packet_id] = message
                                self.sent_at.setdefault(message.key, time.monotonic())
                                writer.write(
                                    publish_packet(
                                        message.topic, message.payload, packet_id, dup=False
                                    )
                                )
                                sent += 1
                            await writer.drain()
                            if acks.done():
                                acks.result()
                            await asyncio.sleep(0.01)
                        await writer.drain()
                        while self._pending:
                            if acks.done():
                                acks.result()
                            await asyncio.sleep(0.01)
                    finally:
                        acks.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await acks
                except (OSError, asyncio.IncompleteReadError, ConnectionError):
                    self.reconnects += 1
                    await asyncio.sleep(0.05)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        while True:
            packet = await reader.readexactly(4)  # we subscribe to nothing: PUBACKs only
            if packet[0] >> 4 != PUBACK >> 4:
                raise ConnectionError(f"unexpected packet {packet!r}")
            message = self._pending.pop(struct.unpack("!H", packet[2:])[0], None)
            if message is not None:
                self.acked.add(message.key)
