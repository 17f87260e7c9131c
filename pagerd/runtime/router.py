"""The runtime's entry point: routes each event to its service's actor and answers once.

Adapters hand events in through ``submit`` (with a reply callback, for MQTT's
at-least-once intake) or ``ask`` (awaitable, for HTTP), and read committed state
through ``state_of``; they never touch actors. Actors exist while a service has
work or an open incident: memory follows open incidents, not registered services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta

import structlog
from msgspec.structs import replace

from pagerd.core.domain import Alert, Event, Incident, LevelFailed, ServiceState, Watch
from pagerd.core.ports import Clock, Outbox, Publisher, Spawner, Writer
from pagerd.core.records import ServiceRow, StoreError, WatchRow
from pagerd.runtime.actor import Envelope, ServiceActor
from pagerd.runtime.answers import Answer, Refused, Reply, Retryable
from pagerd.runtime.directory import Directory
from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.runtime")

# How long ``ask`` waits for an event to be committed before answering Retryable.
REPLY_TIMEOUT_S = 30.0
# MQTT intake pauses at FULL_AT messages in the mailboxes and goes on at ROOM_AT. A
# broker sends a persistent session's whole backlog at once: a million queued alerts
# taken in together would be gigabytes of memory (about 2 KiB a waiting message). The
# bound is wide because a service with several messages waiting decides and commits
# them in one batch, and a commit round carries more services: a backlog is taken in
# faster with more waiting (docs/benchmarks.md, 2026-12-04).
FULL_AT = 40_000
ROOM_AT = 20_000


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
        self._actors: dict[str, ServiceActor] = {}
        self._queued = 0
        self._waiting_for_room: list[Callable[[], None]] = []
        self._drained = asyncio.Event()
        self._drained.set()

    # --- the entry point ---

    def submit(self, service_id: str, event: Event, reply: Reply | None = None) -> None:
        """Hand ``event`` to the service's actor; ``reply`` gets the answer exactly once.

        An event no actor can take (an unknown service, a service that cannot be read)
        is answered before this returns.
        """
        actor = self._actors.get(service_id)
        if actor is None:
            try:
                actor = self._new_actor(service_id, event)
            except StoreError as error:
                log.error(  # noqa: TRY400 - the store error says all there is
                    "service.unreadable", service_id=service_id, error=str(error)
                )
                metrics.READ_FAILURES.inc()
                if reply is not None:
                    why = f"the service could not be read: {error}"
                    reply(Retryable(service_id, why, "unreadable"))
                return
            if actor is None:
                if reply is not None:
                    reply(Refused(service_id, self._unknown(service_id), "unknown_service"))
                return
        self.queued(1)
        actor.post(Envelope(event, reply))

    async def ask(
        self, service_id: str, event: Event, *, wait_s: float = REPLY_TIMEOUT_S
    ) -> Answer:
        """``submit`` and wait for the answer; Retryable if none comes within ``wait_s``."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def reply(answer: Answer) -> None:
            if not future.done():  # the asker may have given up waiting
                future.set_result(answer)

        self.submit(service_id, event, reply)
        try:
            async with asyncio.timeout(wait_s):
                return await future
        except TimeoutError:
            log.warning("runtime.answer_timeout", service_id=service_id, wait_s=wait_s)
            return Retryable(service_id, f"not committed within {wait_s:g} s", "timeout")

    def accepts(self, service_id: str, event: Event) -> bool:
        """Whether an event for ``service_id`` would be routed (an alert may register it)."""
        return service_id in self.directory.services or (
            bool(self.fallback_policy) and isinstance(event, Alert)
        )

    def _unknown(self, service_id: str) -> str:
        why = (
            "only an alert registers a service with [routing] fallback_policy"
            if self.fallback_policy
            else "no [routing] fallback_policy registers it"
        )
        return f"unknown service {service_id!r}: {why}"

    def _new_actor(self, service_id: str, event: Event) -> ServiceActor | None:
        unsaved = None
        if service_id not in self.directory.services:
            if not (self.fallback_policy and isinstance(event, Alert)):
                return None
            # Registered with the fallback policy in the same commit as its first alert.
            unsaved = ServiceRow(service_id, service_id, self.fallback_policy, managed=False)
            self.directory.services.put(unsaved)
        actor = ServiceActor(service_id, ServiceState(service_id), self)
        actor.unsaved_service = unsaved
        self._actors[service_id] = actor
        metrics.ACTORS_ALIVE.set(len(self._actors))
        return actor

    async def run(self) -> None:
        """Escalate at once each level whose pages all failed, as the outbox reports them."""
        async for failed in self.outbox.failed_levels():
            self.submit(failed.service_id, LevelFailed(failed.incident_id, failed.step))

    # --- committed state ---

    def state_of(self, service_id: str) -> ServiceState | None:
        """The service's committed state, or None when it has no live actor (healthy)."""
        actor = self._actors.get(service_id)
        return None if actor is None else actor.state

    def open_incident(self, service_id: str) -> Incident | None:
        """The service's open incident as committed, or None."""
        state = self.state_of(service_id)
        return None if state is None else state.open_incident

    def live_states(self) -> Iterator[ServiceState]:
        """The committed state of every service with a live actor."""
        return (actor.state for actor in list(self._actors.values()))

    # --- start-up and shutdown ---

    def recover(
        self, open_states: Iterable[ServiceState], *, arm_before: datetime | None = None
    ) -> int:
        """Recreate actors for services with an open incident (``Store.read_open_states``)
        and re-arm their timers; overdue ones fire at once.

        With ``arm_before``, only the timers due before it are armed here, and
        ``arm_timers`` arms the others once serving, a chunk at a time, so arming every
        open incident's timer is not on the way to READY.
        """
        count = 0
        for state in open_states:
            actor = ServiceActor(state.service_id, state, self)
            replaced = self._actors.get(state.service_id)
            if replaced is not None:  # two open incidents of one service: the later wins
                replaced.cancel_timer()
            self._actors[state.service_id] = actor
            # A deadline is set exactly while the incident asks for a timer.
            deadline = None if state.incident is None else state.incident.ack_deadline
            if deadline is not None and (arm_before is None or deadline < arm_before):
                actor.sync_timer()
            count += 1
        metrics.ACTORS_ALIVE.set(len(self._actors))
        metrics.INCIDENTS_OPEN.inc(count)  # start-up recovers in several calls
        return count

    def watch(self, rows: Iterable[WatchRow]) -> int:
        """Give each service with a heartbeat interval or a maintenance window the state
        that asks for its timers (``Store.read_watches``), after ``recover``.

        A heartbeat's deadline is kept in memory only: after start-up each service gets
        one full interval before a missed beat counts (CONTRACT §8).
        """
        now = self.clock.now()
        count = 0
        for row in rows:
            actor = self._actors.get(row.service_id)
            if actor is None:
                actor = ServiceActor(row.service_id, ServiceState(row.service_id), self)
                self._actors[row.service_id] = actor
            due = None if row.heartbeat_s is None else now + timedelta(seconds=row.heartbeat_s)
            actor.state = replace(actor.state, maintenance=row.maintenance, beat_due=due)
            actor.sync_timer()
            count += 1
        metrics.ACTORS_ALIVE.set(len(self._actors))
        return count

    def rewatch(self, service_id: str) -> None:
        """The service's heartbeat interval changed: watch it anew, from now."""
        self.submit(service_id, Watch())

    async def arm_timers(self, chunk: int = 2_000) -> None:
        """Arm every timer an actor's state asks for and lacks, yielding between chunks."""
        actors = list(self._actors.values())
        for start in range(0, len(actors), chunk):
            for actor in actors[start : start + chunk]:
                if self._actors.get(actor.service_id) is actor:
                    actor.sync_timer()  # nothing to do if it was armed meanwhile
            await asyncio.sleep(0)  # intake goes on between chunks

    def retire_if_idle(self, actor: ServiceActor) -> None:
        if actor.retirable and self._actors.get(actor.service_id) is actor:
            del self._actors[actor.service_id]
            metrics.ACTORS_ALIVE.set(len(self._actors))

    def cancel_all(self) -> None:
        """Stop every actor, answering what it had not committed as not committed (at
        shutdown past the drain deadline, or when a node loses its lease)."""
        for actor in list(self._actors.values()):
            actor.abandon()

    def stop_timers(self) -> None:
        """Cancel every timer (at shutdown: deadlines are in the database)."""
        for actor in self._actors.values():
            actor.cancel_timer()

    # --- backpressure and draining ---

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
