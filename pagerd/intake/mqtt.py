"""MQTT adapter: monitors' events in, service state and timeline events out.

Intake is at-least-once end to end: pagerd subscribes with a persistent session
and sends the PUBACK for a message only after its effect is committed, so the
broker redelivers whatever a crash interrupted. Bad input is answered on
``{prefix}/rejected``, logged, counted, and acknowledged so it is not redelivered
forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

import msgspec
import structlog

from pagerd.core.domain import RecordTimeline, ServiceState
from pagerd.core.ports import OnCallNow
from pagerd.core.times import rfc3339
from pagerd.intake.dead_letters import FAILURES_BEFORE_DEAD, DeadLetters
from pagerd.intake.mqtt_client import (
    ConnectOptions,
    MqttClient,
    MqttError,
    PublishHandler,
    SubscribeRefusedError,
    Will,
    connect_first,
)
from pagerd.intake.mqtt_messages import (
    KINDS,
    MAX_PAYLOAD_BYTES,
    TAKEN,
    Intake,
    Rejected,
    Verdict,
    asked_request_id,
    not_taken_reason,
    parse_message,
    parse_topic,
    too_large,
    verdict_topic,
)
from pagerd.runtime.answers import Answer, Committed, Refused, Reply, Retryable
from pagerd.runtime.router import Runtime
from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.mqtt")

KEEPALIVE_S = 15
REJECTED_PAYLOAD_BYTES = 1024
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 3.0  # a broker back after a restart is found within seconds
# After a failed commit, reconnect this much later: the broker redelivers only on a new
# connection what was not acknowledged, and a failing disk must not be hammered.
REDELIVERY_DELAY_S = 1.0
MAY_CONNECT_POLL_S = 0.1
REPUBLISH_CHUNK = 1_000  # states republished per turn of the event loop after a connect

# Counted once per message: the labelled children are looked up once, not each time.
_RECEIVED = {k: metrics.ALERTS_RECEIVED.labels(source="mqtt", kind=k) for k in KINDS}


# --- the link ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    topic_prefix: str
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()  # instead of host and port: one broker cluster
    max_message_bytes: int = MAX_PAYLOAD_BYTES

    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The broker addresses to try in turn: ``hosts``, else ``host`` and ``port``."""
        return self.hosts or ((self.host, self.port),)

    def where(self) -> str:
        return ", ".join(f"{host}:{port}" for host, port in self.addresses())

    def options(self, client_id: str, *, persistent: bool, will: Will | None) -> ConnectOptions:
        """How to connect: TLS, user name and password as configured."""
        return ConnectOptions(
            client_id=client_id,
            clean_session=not persistent,
            keepalive_s=KEEPALIVE_S,
            username=self.username,
            password=self.password,
            will=will,
            ssl=ssl.create_default_context(cafile=self.tls_ca_file) if self.tls else None,
            max_message_bytes=self.max_message_bytes,
        )


@contextlib.asynccontextmanager
async def connected(
    settings: MqttSettings, *, on_message: PublishHandler | None = None
) -> AsyncIterator[MqttClient]:
    """A short connection with a clean session and an id of its own, for the command line.

    It connects as the daemon does (TLS, user name, password, the hosts in turn). What
    it subscribes to goes to ``on_message``; a message over the size limit is ignored.
    """
    options = settings.options(f"pagerd-cli-{secrets.token_hex(4)}", persistent=False, will=None)

    def make() -> MqttClient:
        return MqttClient(
            options,
            on_message=on_message or _ignore,
            on_oversized=lambda _topic, _size, _packet_id: None,
        )

    client = await connect_first(settings.addresses(), make)
    try:
        yield client
    finally:
        await client.disconnect()


def _ignore(_topic: str, _payload: bytes, _packet_id: int | None) -> None:
    pass


class MqttPublisher:
    """The runtime's publisher port: retained states and timeline events, on the link's
    current connection; what changes while there is none waits for the next."""

    def __init__(self, topic_prefix: str) -> None:
        self._prefix = topic_prefix
        self._client: MqttClient | None = None
        # States that changed while disconnected, the latest of each service.
        self._unpublished: dict[str, tuple[ServiceState, datetime]] = {}
        self._published_all = False  # until a connection has published every live state
        # Each schedule's on-call as last announced, published again on every connection:
        # they are few, and a retained message lost with a broker's state comes back.
        self._on_call: dict[str, bytes] = {}

    def connected(self, client: MqttClient | None) -> None:
        """The link's connection is ``client`` from now on (None: there is none)."""
        self._client = client

    def publish_state(self, service_id: str, state: ServiceState, at: datetime) -> None:
        client = self._client
        if client is None or not client.publish_nowait(
            f"{self._prefix}/state/{service_id}",
            msgspec.json.encode(state_payload(state, at)),
            qos=1,
            retain=True,
        ):
            self._unpublished[service_id] = (state, at)  # for the next connection
            return
        self._unpublished.pop(service_id, None)  # this one is newer

    def publish_events(self, service_id: str, events: Iterable[RecordTimeline]) -> None:
        client = self._client
        if client is None:
            return
        topic = f"{self._prefix}/events/{service_id}"
        for event in events:
            body = {
                "type": event.type,
                "at": rfc3339(event.at),
                "incident_id": event.incident_id,
                "service_id": service_id,
                "detail": dict(event.detail),
            }
            client.publish_nowait(topic, msgspec.json.encode(body))

    def publish_on_call(self, schedule_id: str, on_call: OnCallNow | None) -> None:
        if on_call is None:
            payload = b""  # an empty retained message clears the topic
            self._on_call.pop(schedule_id, None)
        else:
            payload = msgspec.json.encode(
                {
                    "developer_id": on_call.developer_id,
                    "name": on_call.name,
                    "until": None if on_call.until is None else rfc3339(on_call.until),
                }
            )
            self._on_call[schedule_id] = payload
        if self._client is not None:
            self._publish_on_call(self._client, schedule_id, payload)

    def _publish_on_call(self, client: MqttClient, schedule_id: str, payload: bytes) -> None:
        # Not sent (the connection ended): the next connection publishes it (republish).
        topic = f"{self._prefix}/oncall/{schedule_id}"
        client.publish_nowait(topic, payload, qos=1, retain=True)

    async def republish(self, client: MqttClient, runtime: Runtime) -> None:
        """Publish what the retained states may not show yet, as the connection is new.

        The first connection of this process publishes every live service's state (a
        crash may have come between a commit and its publication); later ones only
        the states that changed while disconnected, including those of actors retired
        meanwhile. In chunks that yield to the loop, after READY, however many open
        incidents there are. A live actor's state
        is read as it is published, and one published directly meanwhile is not
        published again, so a newer state is never overwritten by an older one.
        """
        for schedule_id, payload in list(self._on_call.items()):
            self._publish_on_call(client, schedule_id, payload)
        if not self._published_all:
            now = runtime.clock.now()
            for live in runtime.live_states():
                self._unpublished.setdefault(live.service_id, (live, now))
        service_ids = list(self._unpublished)
        for start in range(0, len(service_ids), REPUBLISH_CHUNK):
            await asyncio.sleep(0)
            if self._client is not client:
                return  # gone: what is left waits for the next connection
            for service_id in service_ids[start : start + REPUBLISH_CHUNK]:
                stored = self._unpublished.get(service_id)
                if stored is None:
                    continue  # published directly meanwhile
                current = runtime.state_of(service_id)
                state, at = stored if current is None else (current, stored[1])
                self.publish_state(service_id, state, at)
        self._published_all = True


class MqttLink:
    """Holds the broker connection: reconnects, subscribes, feeds the runtime."""

    def __init__(
        self,
        settings: MqttSettings,
        runtime: Runtime,
        publisher: MqttPublisher,
        dead_letters: DeadLetters,
        may_connect: Callable[[], bool] = lambda: True,
    ) -> None:
        self._settings = settings
        # False once this node may no longer act (a cluster node whose lease lapsed): it
        # must not take the shared session back from the node that acts now.
        self._may_connect = may_connect
        self._prefix = settings.topic_prefix
        self._runtime = runtime
        self._publisher = publisher
        self._dead_letters = dead_letters
        self._options = settings.options(
            settings.client_id,
            persistent=True,  # the broker keeps our subscriptions and queues for us
            will=Will(f"{self._prefix}/status", b"offline", qos=1, retain=True),
        )
        self._next_address = 0  # where the next connection attempt starts in addresses()
        self._generation = 0
        self._rng = random.Random()
        self.subscribed = asyncio.Event()
        self._redeliver = asyncio.Event()  # set when a message was left unacknowledged
        self._acks: list[int] = []  # committed, their PUBACKs not yet sent

    async def run(self) -> None:
        """Connect, and reconnect with jittered exponential backoff, until cancelled."""
        failures = 0
        while True:
            if not self._may_connect():
                # The node is about to stop this link: until then, it never reconnects.
                await asyncio.sleep(MAY_CONNECT_POLL_S)
                continue
            try:
                await self._session()
            except MqttError as error:
                self._lost()
                failures += 1
                delay = self._rng.uniform(
                    0, min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** min(failures, 10))
                )
                metrics.MQTT_CONNECTION_FAILURES.labels(kind=error.kind).inc()
                log.warning(
                    "mqtt.disconnected",
                    error=str(error),
                    kind=error.kind,
                    retry_in_s=round(delay, 3),
                    exc_info=_handler_failure(error),
                )
                await asyncio.sleep(delay)
            else:
                # The session ended for a redelivery of what a failed commit left unacked.
                failures = 0
                await asyncio.sleep(REDELIVERY_DELAY_S)

    def _lost(self) -> None:
        self._publisher.connected(None)
        self.subscribed.clear()
        metrics.MQTT_CONNECTED.set(0)

    async def _connect(self, generation: int) -> MqttClient:
        """Connect to the first address that answers, starting after the one used last.

        A fresh client per connection: a packet id from a dead connection must never be
        acknowledged on the next one, where it may name another message. A broker node
        that dropped pagerd is not the first one tried again.
        """
        addresses = self._settings.addresses()
        start = self._next_address % len(addresses)

        def make() -> MqttClient:
            client = MqttClient(
                self._options,
                on_message=lambda topic, payload, mid: self._receive(
                    client, generation, topic, payload, mid
                ),
                on_oversized=lambda topic, size, mid: self._oversized(
                    client, generation, topic, size, mid
                ),
            )
            return client

        client = await connect_first(addresses[start:] + addresses[:start], make)
        self._next_address = addresses.index(client.address) + 1
        return client

    async def _session(self) -> None:
        self._generation += 1
        generation = self._generation
        # Cleared before connecting: a message of the session's backlog, delivered before
        # the SUBACK, may already ask for the next redelivery.
        self._redeliver.clear()
        # The broker sends a persistent session's backlog right after CONNACK: the
        # client hands it to _receive from then on.
        client = await self._connect(generation)
        try:
            self._publisher.connected(client)
            prefix = self._prefix
            granted = await client.subscribe([(f"{prefix}/{kind}/+", 1) for kind in KINDS])
            if min(granted) < 1:
                # At QoS 0 the broker would not keep what pagerd has not committed.
                raise SubscribeRefusedError(
                    f"the broker granted QoS {min(granted)} where pagerd asked for 1"
                )
            client.publish_nowait(f"{prefix}/status", b"online", qos=1, retain=True)
            metrics.MQTT_CONNECTED.set(1)
            self.subscribed.set()
            host, port = client.address
            log.info(
                "mqtt.subscribed", host=host, port=port, session_present=client.session_present
            )
            # All three are awaited below before this session ends, whatever ends it.
            lost = asyncio.create_task(client.lost(), name="pagerd[mqtt-connection]")
            redeliver = asyncio.create_task(self._redeliver.wait(), name="pagerd[mqtt-redeliver]")
            republish = asyncio.create_task(
                self._publisher.republish(client, self._runtime), name="pagerd[mqtt-republish]"
            )
            try:
                done, _ = await asyncio.wait({lost, redeliver}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (lost, redeliver, republish):
                    task.cancel()
                await asyncio.gather(lost, redeliver, republish, return_exceptions=True)
                self._lost()
            if lost in done:
                raise lost.result()  # for run() to retry
            log.warning("mqtt.reconnecting", reason="redeliver unacknowledged messages")
        finally:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # pagerd is stopping. A DISCONNECT makes the broker drop the will, so
                # say offline first.
                client.publish_nowait(f"{self._prefix}/status", b"offline", qos=1, retain=True)
                await client.disconnect()
            else:
                client.close()

    def _receive(
        self, client: MqttClient, generation: int, topic: str, payload: bytes, mid: int | None
    ) -> None:
        try:
            intake = parse_message(topic, payload, self._prefix, self._settings.max_message_bytes)
        except Rejected as refusal:
            self._reject(client, topic, payload, refusal.reason, refusal.code)
            self._ack(client, generation, mid)
            if (asked := asked_request_id(payload)) is not None:
                self._verdict(client, Verdict(asked, taken=False, reason=refusal.reason))
            return
        _RECEIVED[intake.kind].inc()
        runtime = self._runtime
        runtime.submit(
            intake.service_id,
            intake.event,
            self._acker(client, generation, mid, payload, intake),
        )
        if runtime.full and not client.paused and generation == self._generation:
            client.pause_reading()
            metrics.MQTT_INTAKE_PAUSES.inc()
            runtime.when_room(client.resume_reading)

    def _acker(
        self,
        client: MqttClient,
        generation: int,
        mid: int | None,
        payload: bytes,
        intake: Intake,
    ) -> Reply:
        # Kept until the answer, for a refusal to quote: never more than the quote needs.
        quoted = (
            payload if len(payload) <= REJECTED_PAYLOAD_BYTES else payload[:REJECTED_PAYLOAD_BYTES]
        )
        return _MessageReply(self, client, generation, mid, quoted, intake)

    def _oversized(
        self, client: MqttClient, generation: int, topic: str, size: int, mid: int | None
    ) -> None:
        """A PUBLISH over max_message_bytes, read past without being held: refused, acked."""
        try:
            parse_topic(topic, self._prefix)  # the topic's verdict first, as for any message
        except Rejected as refusal:
            reason, code = refusal.reason, refusal.code
        else:
            reason, code = too_large(size, self._settings.max_message_bytes), "too_large"
        self._reject(client, topic, b"", reason, code, size=size)
        self._ack(client, generation, mid)

    def _ack(self, client: MqttClient, generation: int, mid: int | None) -> None:
        # A packet id from a connection that is gone may name another message on this one.
        if mid is None or generation != self._generation:
            return
        # A commit round releases many messages in one turn of the loop: their PUBACKs
        # are gathered and go out together once it ends.
        if not self._acks:
            asyncio.get_running_loop().call_soon(self._send_acks, client, generation)
        self._acks.append(mid)

    def _send_acks(self, client: MqttClient, generation: int) -> None:
        mids, self._acks = self._acks, []
        if generation == self._generation:  # not replaced meanwhile
            client.puback(mids)

    def _verdict(self, client: MqttClient, verdict: Verdict) -> None:
        """Answer a sender that asked, on a topic of its request's own (QoS 1)."""
        topic = verdict_topic(self._prefix, verdict.request_id)
        client.publish_nowait(topic, msgspec.json.encode(verdict), qos=1)

    def _reject(
        self,
        client: MqttClient,
        topic: str,
        payload: bytes,
        reason: str,
        code: str,
        *,
        size: int | None = None,
    ) -> None:
        """Answer on the rejected topic; ``size`` for a payload too large to have been kept."""
        metrics.ALERTS_REJECTED.labels(source="mqtt", reason=code).inc()
        body: dict[str, object] = {
            "topic": topic,
            "reason": reason,
            "payload": payload[:REJECTED_PAYLOAD_BYTES].decode("utf-8", "replace"),
        }
        if size is None:
            log.warning("mqtt.rejected", topic=topic, reason=reason)
        else:
            log.warning("mqtt.rejected", topic=topic, reason=reason, size=size)
            body["size"] = size
        client.publish_nowait(f"{self._prefix}/rejected", json.dumps(body).encode())


@dataclass(slots=True, eq=False)
class _MessageReply:
    """The answer to one MQTT message: PUBACK, refusal, dead letter or redelivery.

    One object per message in flight, rather than a closure per outcome: thousands wait
    for their commit at once, and each object the cyclic garbage collector tracks is
    scanned again at every collection while it waits.
    """

    _link: MqttLink
    _client: MqttClient
    _generation: int
    _mid: int | None
    _quoted: bytes
    _intake: Intake

    def __call__(self, answer: Answer) -> None:
        link, intake = self._link, self._intake
        match answer:
            case Committed(outcome=outcome, incident=incident):
                self._ack()
                if intake.request_id is not None:
                    incident_id = None if incident is None else incident.id
                    if outcome in TAKEN:
                        self._verdict(True, outcome=outcome.value, incident_id=incident_id)
                    else:
                        asked = getattr(intake.event, "incident_id", None)
                        why = not_taken_reason(intake.service_id, outcome, asked)
                        self._verdict(False, outcome=outcome.value, reason=why)
            case Refused(reason=reason, code="no_policy"):
                self._dead(reason, "no_policy")  # pagerd's own reason: kept for the operator
            case Refused(reason=reason, code=code):
                link._reject(self._client, intake.topic, self._quoted, reason, code)
                self._ack()
                self._verdict(False, reason=reason)
            case Retryable(reason=reason, code="internal_error") if link._dead_letters.failed(
                intake.topic, self._quoted
            ):
                self._dead(f"failed {FAILURES_BEFORE_DEAD} times: {reason}", "internal_error")
            case Retryable(reason=reason):
                log.error("mqtt.not_acknowledged", topic=intake.topic, error=reason)
                self._redeliver()
            case _:
                assert_never(answer)

    def _ack(self) -> None:
        self._link._ack(self._client, self._generation, self._mid)

    def _redeliver(self) -> None:
        # Not committed: no PUBACK, so the broker redelivers it after a reconnect.
        if self._generation == self._link._generation:
            self._link._redeliver.set()

    def _verdict(self, taken: bool, **fields: str | None) -> None:
        if self._intake.request_id is not None:
            verdict = Verdict(self._intake.request_id, taken, **fields)
            self._link._verdict(self._client, verdict)

    def _dead(self, reason: str, code: str) -> None:
        topic = self._intake.topic

        def kept() -> None:
            self._link._reject(self._client, topic, self._quoted, f"dead-lettered: {reason}", code)
            self._ack()
            self._verdict(False, reason=f"dead-lettered: {reason}")

        self._link._dead_letters.keep(
            "mqtt", topic, self._quoted, reason, kept=kept, not_kept=self._redeliver
        )


def _handler_failure(error: MqttError) -> BaseException | None:
    """The exception of ours that ended a connection, for its traceback; None if the network's."""
    cause = error.__cause__
    return None if cause is None or isinstance(cause, OSError | MqttError) else cause


def state_payload(state: ServiceState, at: datetime) -> dict[str, object]:
    """The retained ``state/{service}`` document."""
    incident = state.incident
    return {
        "service_id": state.service_id,
        "health": "healthy" if state.healthy else "unhealthy",
        "incident_id": None if incident is None else incident.id,
        "status": None if incident is None else incident.status.value,
        "level": None if incident is None else incident.level,
        "updated_at": rfc3339(at),
    }
