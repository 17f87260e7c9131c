"""``pagerd alert|ack|healthy``: publish an event as a monitor would; wait for the verdict.

The event carries a fresh ``request_id``; pagerd answers on ``{prefix}/verdicts/{id}``,
to which this connection subscribes before it publishes, so no verdict can come too
early to be seen (CONTRACT §9).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

import msgspec

from pagerd.intake.mqtt import MqttSettings, connected
from pagerd.intake.mqtt_client import MqttError
from pagerd.intake.mqtt_messages import Kind, Verdict, verdict_topic

BROKER_TIMEOUT_S = 10.0  # to connect, subscribe and have the broker take the event


@dataclass(frozen=True, slots=True)
class Sent:
    """What came of a publication: ``verdict`` None when none was asked for or came."""

    request_id: str | None
    verdict: Verdict | None


async def send_event(
    settings: MqttSettings, kind: Kind, service_id: str, body: dict[str, str], wait_s: float
) -> Sent:
    """Publish ``body`` on ``{prefix}/{kind}/{service_id}`` at QoS 1; with ``wait_s`` > 0,
    wait that long for the verdict. Raises MqttError when the broker cannot be reached."""
    request_id = f"cli-{secrets.token_hex(8)}" if wait_s > 0 else None
    topic = f"{settings.topic_prefix}/{kind}/{service_id}"
    payload = msgspec.json.encode(body if request_id is None else {"request_id": request_id} | body)
    verdicts: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        async with (
            asyncio.timeout(BROKER_TIMEOUT_S) as deadline,
            connected(
                settings, on_message=lambda _topic, data, _packet_id: verdicts.put_nowait(data)
            ) as client,
        ):
            if request_id is not None:
                await client.subscribe([(verdict_topic(settings.topic_prefix, request_id), 1)])
            await client.publish(topic, payload, qos=1)
            if request_id is None:
                return Sent(None, None)
            deadline.reschedule(None)  # the broker has it: from here on, only --wait counts
            return Sent(request_id, await _verdict(verdicts, request_id, wait_s))
    except TimeoutError:
        raise MqttError(f"no answer from the broker within {BROKER_TIMEOUT_S:g} s") from None


async def _verdict(
    verdicts: asyncio.Queue[bytes], request_id: str, wait_s: float
) -> Verdict | None:
    try:
        async with asyncio.timeout(wait_s):
            while True:
                try:
                    verdict = msgspec.json.decode(await verdicts.get(), type=Verdict)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # not pagerd's: the topic is ours, but anyone may publish on it
                if verdict.request_id == request_id:
                    return verdict
    except TimeoutError:
        return None
