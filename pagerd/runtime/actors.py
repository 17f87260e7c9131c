"""The actor system: one actor per service serialises its events and owns its ack timer.

An actor takes what is waiting in its mailbox, runs ``decide`` for each message
in arrival order, commits the lot in one store write, and only then arms its
timer, releases the outbox, publishes, and answers the senders (an MQTT PUBACK,
an HTTP response). Actors exist while a service has work or an open incident:
memory follows open incidents, not registered services.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import assert_never

import structlog

from pagerd.core.domain import (
    Ack,
    AckTimeout,
    Alert,
    ArmTimer,
    CancelTimer,
    Decision,
    Event,
    Healthy,
    Incident,
    Notify,
    Outcome,
    RecordAlert,
    RecordTimeline,
    ServiceState,
    decide,
)
from pagerd.core.policy import EmailTarget, SmsTarget, TeamTarget, WebhookTarget
from pagerd.core.ports import Clock, Outbox, Publisher, Spawner, TimerHandle, Writer
from pagerd.core.records import OutboxRow, ServiceRow, StoreError, TeamRow, WriteBatch
from pagerd.runtime.directory import Directory
from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.runtime")
# structlog builds a bound logger for each call before its level filter drops it: the
# busiest lines ask the standard library first, which caches the answer.
_level_of = logging.getLogger("pagerd.runtime")

# An actor commits at most this many messages in one write, so one busy service
# cannot hold a huge transaction while others wait.
MAX_MESSAGES_PER_WRITE = 512
COMMIT_RETRY_DELAY = timedelta(seconds=1)
# MQTT intake pauses at FULL_AT messages in the mailboxes and goes on at ROOM_AT. A
# broker sends a persistent session's whole backlog at once: a million queued alerts
# taken in together would be gigabytes of memory. The bound is wide because a service
# with several messages waiting decides and commits them in one batch: at 5,000 the
# actors mostly held one each, and a 50,000-alert backlog took a third longer.
FULL_AT = 20_000
ROOM_AT = 10_000
# Counted once per message: the labelled children are looked up once, not each time.
_DECIDED = {o: metrics.EVENTS_DECIDED.labels(outcome=o.value) for o in Outcome}
QUIET_OUTCOMES = frozenset({Outcome.APPENDED, Outcome.DUPLICATE_ALERT, Outcome.STALE_TIMEOUT})

# Crockford's base32 digits (no I, L, O, U), in order, so that ids sort as numbers.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit number as its two digits: an id is eight lookups, not a base64 encoding
# (5.8 µs, and every alert carries a would-be id).
_DIGIT_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
# Every alert carries a would-be id (it is kept only if it opens an incident), so the
# draw must be cheap: ids need to be unique, not secret, and a seeded generator suffices.
_id_bits = random.Random(secrets.randbits(64))


def new_incident_id(now_ms: int | None = None) -> str:
    """A 16-character id that sorts by creation time: 50 bits of ms, 30 random bits.

    The digits of ``(ms << 30) | random`` in Crockford's base32, most significant first.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    bits = _id_bits.getrandbits(30)
    p = _DIGIT_PAIRS
    return (
        f"{p[ms >> 40 & 0x3FF]}{p[ms >> 30 & 0x3FF]}{p[ms >> 20 & 0x3FF]}{p[ms >> 10 & 0x3FF]}"
        f"{p[ms & 0x3FF]}{p[bits >> 20]}{p[bits >> 10 & 0x3FF]}{p[bits & 0x3FF]}"
    )


class UnknownServiceError(LookupError):
    """An event for a service that is not registered; ``str()`` says why it was not registered."""

    def __init__(self, service_id: str, *, fallback_policy: str) -> None:
        why = (
            "only an alert registers a service with [routing] fallback_policy"
            if fallback_policy
            else "no [routing] fallback_policy registers it"
        )
        super().__init__(f"unknown service {service_id!r}: {why}")
        self.service_id = service_id


@dataclass(frozen=True, slots=True)
class Result:
    """What a message amounted to, once committed (or why it was not)."""

    service_id: str
    outcome: Outcome | None
    incident: Incident | None
    notified: tuple[OutboxRow, ...] = ()
    error: str | None = None


Reply = Callable[[Result], None]


@dataclass(slots=True)
class Envelope:
    """A message in an actor's mailbox; ``reply`` is called once, after commit or failure."""

    event: Event
    reply: Reply | None = None
    received_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Batch:
    """The rows of several decisions of one actor, written in one transaction."""

    service_id: str
    service: ServiceRow | None = None
    incidents: dict[str, Incident] = field(default_factory=dict)
    alerts: list[tuple[str, RecordAlert]] = field(default_factory=list)
    timeline: list[tuple[str, RecordTimeline]] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    teams: dict[int, TeamRow] = field(default_factory=dict)  # cursors advanced by this batch
    teams_before: dict[int, TeamRow] = field(default_factory=dict)  # as they were before it

    def is_empty(self) -> bool:
        return not (self.service or self.incidents or self.alerts or self.timeline or self.outbox)

    def to_write(self) -> WriteBatch:
        return WriteBatch(
            services=() if self.service is None else (self.service,),
            incidents=tuple((self.service_id, incident) for incident in self.incidents.values()),
            alerts=tuple(self.alerts),
            timeline=tuple(self.timeline),
            outbox=tuple(self.outbox),
            team_cursors=tuple((team.id, team.cursor) for team in self.teams.values()),
        )


class ServiceActor:
    """Serialises one service's events; owns its ack timer."""

    def __init__(self, service_id: str, state: ServiceState, runtime: Runtime) -> None:
        self.service_id = service_id
        self.state = state
        self.mailbox: deque[Envelope] = deque()
        self._runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._timer: TimerHandle | None = None
        self._timer_key: tuple[str, int] | None = None
        self.unsaved_service: ServiceRow | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def retirable(self) -> bool:
        return not self.busy and not self.mailbox and self._timer is None and self.state.healthy

    def post(self, envelope: Envelope) -> None:
        """Queue a message; the actor's task starts if it is not running."""
        self.mailbox.append(envelope)
        if self._task is None:
            self._task = self._runtime.spawner.create_task(
                self._run(), name=f"pagerd[svc={self.service_id}]"
            )

    async def _run(self) -> None:
        try:
            while self.mailbox:
                count = min(len(self.mailbox), MAX_MESSAGES_PER_WRITE)
                batch = [self.mailbox.popleft() for _ in range(count)]
                try:
                    await self._handle(batch)
                except Exception as error:  # one bad batch must not stop the actor
                    log.exception("actor.failed", service_id=self.service_id)
                    metrics.ACTOR_FAILURES.inc()
                    _reply_all(batch, self.service_id, f"internal error: {error!r}")
                finally:
                    self._runtime.queued(-len(batch))
        finally:
            self._task = None
            self._runtime.retire_if_idle(self)

    async def _handle(self, batch: list[Envelope]) -> None:
        runtime = self._runtime
        before = state = self.state
        rows = _Batch(self.service_id, service=self.unsaved_service)
        decided: list[tuple[Envelope, Decision | None, tuple[OutboxRow, ...]]] = []
        for envelope in batch:
            policy = runtime.directory.policy_for(self.service_id)
            if policy is None:
                decided.append((envelope, None, ()))
                continue
            now = runtime.clock.now()
            decision = decide(state, envelope.event, policy, now)
            notified = self._collect(state, decision, rows, now)
            decided.append((envelope, decision, notified))
            state = decision.state

        if not rows.is_empty():
            try:
                await runtime.store.write(rows.to_write())
            except StoreError as error:
                log.error(  # noqa: TRY400 - the store error says all there is; no traceback
                    "commit.failed", service_id=self.service_id, error=str(error)
                )
                metrics.COMMIT_FAILURES.inc()
                _reply_all(batch, self.service_id, f"not committed: {error}")
                for team_id, advanced in rows.teams.items():  # nobody was paged: not a turn
                    runtime.directory.give_back(advanced, rows.teams_before[team_id])
                # The state stays as committed; a timeout lost with this batch must come
                # again, but not in a tight loop against a failing disk.
                self._timer_key = None
                self._sync_timer(not_before=runtime.clock.now() + COMMIT_RETRY_DELAY)
                return
        self.unsaved_service = None
        self.state = state
        self._sync_timer()
        runtime.outbox.release(rows.outbox)
        if rows.timeline:
            runtime.publisher.publish_events(self.service_id, (t for _, t in rows.timeline))
        if _visible(state) != _visible(before):
            # The retained state/{service} shows health, incident, status and level only:
            # an appended alert changes none of them and publishes nothing.
            runtime.publisher.publish_state(self.service_id, state, runtime.clock.now())
        for envelope, decided_by, notified in decided:
            self._finish(envelope, decided_by, notified)

    def _collect(
        self, before: ServiceState, decision: Decision, rows: _Batch, now: datetime
    ) -> tuple[OutboxRow, ...]:
        """Turn a decision's effects into rows of the pending write."""
        incident = decision.state.incident
        # ``decide`` returns the very same state when nothing changed.
        if incident is not None and decision.state is not before:
            rows.incidents[incident.id] = incident
        notified: list[OutboxRow] = []
        for effect in decision.effects:
            match effect:
                case Notify():
                    row = self._outbox_row(effect, rows, now)
                    rows.outbox.append(row)
                    notified.append(row)
                    if row.status == "failed":
                        rows.timeline.append((self.service_id, _failed_at_once(row, now)))
                case RecordAlert():
                    rows.alerts.append((self.service_id, effect))
                case RecordTimeline():
                    rows.timeline.append((self.service_id, effect))
                case ArmTimer() | CancelTimer():
                    # The timer follows the committed state (see _sync_timer): a batch
                    # of several decisions nets out to its final state's timer.
                    pass
                case _:
                    assert_never(effect)
        return tuple(notified)

    def _outbox_row(self, notify: Notify, rows: _Batch, now: datetime) -> OutboxRow:
        # One constructor call per row: dataclasses.replace was a tenth of an actor's step.
        developer_id: int | None = None
        status, last_error = "pending", None
        target = notify.target
        match target:
            case SmsTarget(phone_number=phone):
                channel, recipient = "sms", phone
            case EmailTarget(address=address):
                channel, recipient = "email", address
            case WebhookTarget(url=url):
                channel, recipient = "webhook", url
            case TeamTarget(team=team):
                channel, recipient = "sms", f"team:{team}"
                picked = self._runtime.directory.next_on_call(team)
                if picked is None:
                    status, last_error = "failed", f"team {team!r} has nobody to page"
                else:
                    developer, team_row, before = picked
                    rows.teams[team_row.id] = team_row
                    rows.teams_before.setdefault(team_row.id, before)
                    recipient, developer_id = developer.phone_number, developer.id
            case _:
                assert_never(target)
        return OutboxRow(
            id=notify.notification_id,
            incident_id=notify.incident_id,
            service_id=notify.service_id,
            channel=channel,
            recipient=recipient,
            level=notify.level,
            step=notify.step,
            message=notify.message,
            created_at=now,
            developer_id=developer_id,
            status=status,
            last_error=last_error,
        )

    def _sync_timer(self, not_before: datetime | None = None) -> None:
        """Arm the timer the committed state asks for; cancel any other."""
        incident = self.state.open_incident
        deadline = None if incident is None else incident.ack_deadline
        if deadline is not None and not_before is not None:
            deadline = max(deadline, not_before)
        wanted = None if incident is None or deadline is None else (incident.id, incident.step)
        if wanted == self._timer_key:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_key = wanted
        if wanted is not None and deadline is not None:
            incident_id, step = wanted
            self._timer = self._runtime.clock.call_at(
                deadline, lambda: self._on_timer(incident_id, step)
            )

    def _on_timer(self, incident_id: str, step: int) -> None:
        # The key stays: until this timeout is decided, the state still asks for this
        # very timer, and arming it again would only post a duplicate.
        self._timer = None
        self._runtime.queued(1)
        self.post(Envelope(AckTimeout(incident_id, step)))

    def cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_key = None

    def _finish(
        self, envelope: Envelope, decision: Decision | None, notified: tuple[OutboxRow, ...]
    ) -> None:
        if decision is None:
            log.error("policy.missing", service_id=self.service_id)
            _reply(envelope, Result(self.service_id, None, None, error="service has no policy"))
            return
        incident = decision.state.incident
        if decision.outcome is Outcome.OPENED:
            metrics.INCIDENTS_OPEN.inc()
        elif decision.outcome is Outcome.RESOLVED:
            metrics.INCIDENTS_OPEN.dec()
        _log_outcome(self.service_id, envelope.event, decision.outcome, incident)
        _DECIDED[decision.outcome].inc()
        _reply(envelope, Result(self.service_id, decision.outcome, incident, notified))


def _log_outcome(
    service_id: str, event: Event, outcome: Outcome, incident: Incident | None
) -> None:
    # One line per appended alert would be the daemon's busiest log: keep it at debug.
    quiet = outcome in QUIET_OUTCOMES
    if quiet and not _level_of.isEnabledFor(logging.DEBUG):
        return
    incident_id = None if incident is None else incident.id
    match event:
        case Alert():
            name = "incident.triggered" if outcome is Outcome.OPENED else f"alert.{outcome.value}"
        case Ack():
            name = f"ack.{outcome.value}"
        case AckTimeout():
            name = f"timeout.{outcome.value}"
        case Healthy():
            name = f"healthy.{outcome.value}"
        case _:
            assert_never(event)
    # "level" is the log line's own severity; the escalation level needs another key.
    escalation_level = None if incident is None else incident.level
    emit = log.debug if quiet else log.info
    emit(name, service_id=service_id, incident_id=incident_id, escalation_level=escalation_level)


def _visible(state: ServiceState) -> tuple[str, str, int] | None:
    """What the retained state topic shows of a service."""
    incident = state.incident
    return None if incident is None else (incident.id, incident.status.value, incident.level)


def _failed_at_once(row: OutboxRow, now: datetime) -> RecordTimeline:
    detail: dict[str, str | int | None] = {
        "notification_id": row.id,
        "channel": row.channel,
        "level": row.level,
        "error": row.last_error,
    }
    return RecordTimeline(row.incident_id, "notification.failed", now, detail)


def _reply(envelope: Envelope, result: Result) -> None:
    if envelope.reply is not None:
        envelope.reply(result)


def _reply_all(batch: list[Envelope], service_id: str, error: str) -> None:
    for envelope in batch:
        _reply(envelope, Result(service_id, None, None, error=error))


class Runtime:
    """Routes events to service actors, creating and retiring them as needed."""

    def __init__(
        self,
        *,
        store: Writer,
        directory: Directory,
        clock: Clock,
        outbox: Outbox,
        publisher: Publisher,
        spawner: Spawner,
        fallback_policy: str = "",
    ) -> None:
        self.store = store
        self.directory = directory
        self.clock = clock
        self.outbox = outbox
        self.publisher = publisher
        self.spawner = spawner
        self.fallback_policy = fallback_policy
        self.actors: dict[str, ServiceActor] = {}
        self._queued = 0
        self._waiting_for_room: list[Callable[[], None]] = []
        self._drained = asyncio.Event()
        self._drained.set()

    def post(self, service_id: str, envelope: Envelope) -> None:
        """Deliver an event to the service's actor; raises UnknownServiceError."""
        actor = self.actors.get(service_id)
        if actor is None:
            actor = self._new_actor(service_id, envelope.event)
        self.queued(1)
        actor.post(envelope)

    def _new_actor(self, service_id: str, event: Event) -> ServiceActor:
        unsaved = None
        if service_id not in self.directory.services:
            if not (self.fallback_policy and isinstance(event, Alert)):
                raise UnknownServiceError(service_id, fallback_policy=self.fallback_policy)
            # Registered with the fallback policy in the same commit as its first alert.
            unsaved = ServiceRow(service_id, service_id, self.fallback_policy, managed=False)
            self.directory.services.put(unsaved)
        actor = ServiceActor(service_id, ServiceState(service_id), self)
        actor.unsaved_service = unsaved
        self.actors[service_id] = actor
        metrics.ACTORS_ALIVE.set(len(self.actors))
        return actor

    def recover(
        self, open_states: Iterable[ServiceState], *, arm_before: datetime | None = None
    ) -> int:
        """Recreate actors for services with an open incident (``Store.load_open_states``)
        and re-arm their timers; overdue ones fire at once.

        With ``arm_before``, only the timers due before it are armed here, and
        ``arm_timers`` arms the others: start-up does so once serving, as arming
        100,000 timers takes the event loop half a second.
        """
        count = 0
        for state in open_states:
            actor = ServiceActor(state.service_id, state, self)
            replaced = self.actors.get(state.service_id)
            if replaced is not None:  # two open incidents of one service: the later wins
                replaced.cancel_timer()
            self.actors[state.service_id] = actor
            # A deadline is set exactly while the incident asks for a timer.
            deadline = None if state.incident is None else state.incident.ack_deadline
            if deadline is not None and (arm_before is None or deadline < arm_before):
                actor._sync_timer()
            count += 1
        metrics.ACTORS_ALIVE.set(len(self.actors))
        metrics.INCIDENTS_OPEN.inc(count)  # start-up recovers in several calls
        return count

    async def arm_timers(self, chunk: int = 2_000) -> None:
        """Arm every timer an actor's state asks for and lacks, yielding between chunks."""
        actors = list(self.actors.values())
        for start in range(0, len(actors), chunk):
            for actor in actors[start : start + chunk]:
                if self.actors.get(actor.service_id) is actor:
                    actor._sync_timer()  # nothing to do if it was armed meanwhile
            await asyncio.sleep(0)  # intake goes on between chunks

    def retire_if_idle(self, actor: ServiceActor) -> None:
        if actor.retirable and self.actors.get(actor.service_id) is actor:
            del self.actors[actor.service_id]
            metrics.ACTORS_ALIVE.set(len(self.actors))

    def queued(self, delta: int) -> None:
        """Count messages in (positive) and finished (negative), for ``drained``."""
        self._queued += delta
        if self._queued:
            self._drained.clear()
        else:
            self._drained.set()
        if self._waiting_for_room and self._queued <= ROOM_AT:
            waiting, self._waiting_for_room = self._waiting_for_room, []
            for callback in waiting:
                callback()

    @property
    def full(self) -> bool:
        """Whether intake should pause: ``FULL_AT`` messages are waiting or in progress."""
        return self._queued >= FULL_AT

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the messages waiting are down to ``ROOM_AT``."""
        if self._queued <= ROOM_AT:
            callback()
        else:
            self._waiting_for_room.append(callback)

    def pending(self) -> int:
        """Messages waiting or in progress across all actors."""
        return self._queued

    async def drained(self) -> None:
        """Return once every message posted so far has been handled."""
        await self._drained.wait()

    def cancel_all(self) -> None:
        """Cancel actors still working (at shutdown, past the drain deadline)."""
        for actor in self.actors.values():
            actor.cancel_task()

    def stop_timers(self) -> None:
        """Cancel every timer (at shutdown: deadlines are in the database)."""
        for actor in self.actors.values():
            actor.cancel_timer()
