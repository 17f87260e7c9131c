"""A node's presence on the broker: the retained ``{prefix}/nodes/{node_id}`` (CONTRACT §7).

The shared ``client_id`` session is the active node's alone, so every node, active or
standby, keeps a second connection of its own for this: client id
``{client_id}-node-{node_id}``, a clean session, subscribed to nothing. It publishes
``{"role", "since"}`` (retained) at each change of role, and again on each reconnect;
its will, retained too, is ``{"role": "offline"}``, so a node that dies or falls off
the network shows as offline once the broker notices (at once for a closed socket,
after one and a half keepalives for a silent one). A clean stop says offline itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import datetime

import msgspec

from pagerd.core.ports import Clock
from pagerd.core.times import rfc3339
from pagerd.intake.mqtt import MqttSettings
from pagerd.intake.mqtt_client import MqttClient, MqttError, Will, connect_first
from pagerd.telemetry.logs import get_logger

log = get_logger(__name__)

RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 10.0
GOODBYE_TIMEOUT_S = 2.0
OFFLINE = msgspec.json.encode({"role": "offline"})


class Presence:
    """Announces this node's role on its own connection; ``run`` until cancelled."""

    def __init__(self, settings: MqttSettings, node_id: str, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self.topic = f"{settings.topic_prefix}/nodes/{node_id}"
        self._options = settings.options(
            f"{settings.client_id}-node-{node_id}",
            persistent=False,  # subscribed to nothing: there is nothing to keep
            will=Will(self.topic, OFFLINE, qos=1, retain=True),
        )
        self._role = "standby"
        self._since: datetime = clock.now()
        self._changed = asyncio.Event()
        self._rng = random.Random()

    def announce(self, role: str) -> None:
        """This node's role is ``role`` from now on (published as soon as connected)."""
        if role != self._role:
            self._role, self._since = role, self._clock.now()
        self._changed.set()

    def _payload(self) -> bytes:
        return msgspec.json.encode({"role": self._role, "since": rfc3339(self._since)})

    async def run(self) -> None:
        """Keep the connection and the retained role; say offline when cancelled."""
        failures = 0
        while True:
            try:
                await self._connected()
            except MqttError as error:
                failures += 1
                delay = self._rng.uniform(
                    0, min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** min(failures, 10))
                )
                log.warning("presence.disconnected", error=str(error), retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
            else:
                failures = 0

    async def _connected(self) -> None:
        def make() -> MqttClient:
            return MqttClient(
                self._options,
                on_message=lambda _topic, _payload, _packet_id: None,
                on_oversized=lambda _topic, _size, _packet_id: None,
            )

        client = await connect_first(self._settings.addresses(), make)
        lost = asyncio.create_task(client.lost(), name="pagerd[presence-connection]")
        changed: asyncio.Task[bool] | None = None
        try:
            while True:
                self._changed.clear()
                await client.publish(self.topic, self._payload(), qos=1, retain=True)
                changed = asyncio.create_task(self._changed.wait())
                done, _ = await asyncio.wait({lost, changed}, return_when=asyncio.FIRST_COMPLETED)
                if lost in done:
                    raise lost.result()
        except asyncio.CancelledError:
            # A clean stop: the will only says offline for a node that vanished.
            with contextlib.suppress(MqttError, TimeoutError):
                async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                    await client.publish(self.topic, OFFLINE, qos=1, retain=True)
            raise
        finally:
            for task in (lost, changed):
                if task is not None:
                    task.cancel()
            await asyncio.gather(lost, *([changed] if changed else []), return_exceptions=True)
            await client.disconnect()
