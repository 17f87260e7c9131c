"""One service's actor: serialises the service's events and owns its timers.

An actor takes what is waiting in its mailbox, runs ``decide`` for each message in
arrival order, commits the lot in one store write, and only then arms its timers,
releases the outbox, publishes, and answers the senders (an MQTT PUBACK, an HTTP
response). If the write fails, nothing of the batch happened: the state stays as
committed and every sender is told to try again. A batch with nothing to write (a
heartbeat that only moves its deadline) costs no write at all.

Its timers follow the committed state: the ack timer of the open incident, the end
of a maintenance window, and the deadline of the next heartbeat. The last moves at
every beat; its timer is not moved each time but fires at the deadline it was armed
for, and arms itself again if a beat has moved the deadline since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, assert_never

import structlog

from pagerd.core.domain import (
    Ack,
    AckTimeout,
    AdvanceRotation,
    Alert,
    ArmTimer,
    Beat,
    BeatMissed,
    CancelTimer,
    Decision,
    EndMaintenance,
    Event,
    Healthy,
    Incident,
    LevelFailed,
    Maintenance,
    MaintenanceOver,
    Note,
    Notify,
    Outcome,
    RecordAlert,
    RecordMaintenance,
    RecordTimeline,
    ServiceState,
    StartMaintenance,
    Watch,
    decide,
)
from pagerd.core.policy import Roster
from pagerd.core.ports import TimerHandle
from pagerd.core.records import OutboxRow, ServiceRow, StoreError, WriteBatch
from pagerd.runtime.answers import Answer, Committed, Refused, Reply, Retryable
from pagerd.runtime.ids import new_incident_id
from pagerd.telemetry import metrics

if TYPE_CHECKING:
    from pagerd.runtime.router import Runtime

log = structlog.get_logger("pagerd.runtime")
# structlog builds a bound logger for each call before its level filter drops it: the
# busiest lines ask the standard library first, which caches the answer.
_level_of = logging.getLogger("pagerd.runtime")

# An actor commits at most this many messages in one write, so one busy service
# cannot hold a huge transaction while others wait.
MAX_MESSAGES_PER_WRITE = 512
COMMIT_RETRY_DELAY = timedelta(seconds=1)
ABANDONED = "not committed: pagerd stopped handling it"
# Counted once per message: the labelled children are looked up once, not each time.
_DECIDED = {o: metrics.EVENTS_DECIDED.labels(outcome=o.value) for o in Outcome}
QUIET_OUTCOMES = frozenset(
    {
        Outcome.APPENDED,
        Outcome.DUPLICATE_ALERT,
        Outcome.STALE_TIMEOUT,
        Outcome.SUPPRESSED,
        Outcome.BEAT,
        Outcome.WATCHED,
        Outcome.NO_MAINTENANCE,
    }
)
# Decisions after which an incident's pages not yet sent are moot, and why (CONTRACT §5).
_MOOTING = {Outcome.ACKNOWLEDGED: "acknowledged", Outcome.RESOLVED: "resolved"}


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
    rotations: dict[int, Roster] = field(default_factory=dict)  # advanced by this batch
    rotations_before: dict[int, Roster] = field(default_factory=dict)  # as they were before it
    maintenance: list[Maintenance | None] = field(default_factory=list)  # the last one holds

    def is_empty(self) -> bool:
        return not (
            self.service
            or self.incidents
            or self.alerts
            or self.timeline
            or self.outbox
            or self.maintenance
        )

    def to_write(self) -> WriteBatch:
        return WriteBatch(
            services=() if self.service is None else (self.service,),
            incidents=tuple((self.service_id, incident) for incident in self.incidents.values()),
            alerts=tuple(self.alerts),
            timeline=tuple(self.timeline),
            outbox=tuple(self.outbox),
            team_cursors=tuple((team_id, r.cursor) for team_id, r in self.rotations.items()),
            maintenance=((self.service_id, self.maintenance[-1]),) if self.maintenance else (),
        )


class ServiceActor:
    """Serialises one service's events; owns its timers."""

    def __init__(self, service_id: str, state: ServiceState, runtime: Runtime) -> None:
        self.service_id = service_id
        self.state = state  # as committed
        self.mailbox: deque[Envelope] = deque()
        self._runtime = runtime
        self._task: asyncio.Task[None] | None = None
        self._timer: TimerHandle | None = None  # the ack timer
        self._timer_key: tuple[str, int] | None = None
        self._window_timer: TimerHandle | None = None  # the end of the maintenance window
        self._window_key: datetime | None = None
        self._beat_timer: TimerHandle | None = None  # the heartbeat's deadline, or before it
        self._beat_armed_at: datetime | None = None
        self.unsaved_service: ServiceRow | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def retirable(self) -> bool:
        return (
            not self.busy
            and not self.mailbox
            and self._timer is None
            and self._window_timer is None
            and self._beat_timer is None
            and self.state.healthy
        )

    def post(self, envelope: Envelope) -> None:
        """Queue a message; the actor's task starts if it is not running."""
        if self._task is None and not self.mailbox and self._decided_at_once(envelope):
            return
        self.mailbox.append(envelope)
        if self._task is None:
            self._task = self._runtime.spawner.create_task(
                self._run(), name=f"pagerd[svc={self.service_id}]"
            )

    def _decided_at_once(self, envelope: Envelope) -> bool:
        """Decide a message to an idle actor in the poster's turn if the decision writes
        nothing (a beat that moves its deadline only, an alert id already absorbed, a
        stale timeout), as the task would: nothing of this service is in flight, and a
        task per beat is most of a beat's cost. A decision that writes is left to the
        task, which decides again (``decide`` is pure)."""
        runtime = self._runtime
        directory = runtime.directory
        policy, heartbeat_s = directory.service_context(self.service_id)
        if policy is None or self.unsaved_service is not None:
            return False
        before = self.state
        try:
            decision = decide(
                before,
                envelope.event,
                policy,
                runtime.clock.now(),
                directory.rosters,
                rotas=directory.rotas,
                heartbeat_s=heartbeat_s,
            )
        except Exception:  # noqa: BLE001 - the task decides again, isolates and reports it
            return False
        if decision.effects or decision.state.incident is not before.incident:
            return False
        self.state = decision.state
        self.sync_timer()
        runtime.queued(-1)
        self._finish(envelope, decision, ())
        runtime.retire_if_idle(self)
        return True

    async def _run(self) -> None:
        try:
            while self.mailbox:
                count = min(len(self.mailbox), MAX_MESSAGES_PER_WRITE)
                batch = [self.mailbox.popleft() for _ in range(count)]
                try:
                    await self._handle_isolating(batch)
                except asyncio.CancelledError:
                    # Only the runtime cancels an actor (``abandon``): what it was deciding
                    # is answered, so no sender waits for an answer that never comes.
                    _reply_all(batch, Retryable(self.service_id, ABANDONED, "abandoned"))
                    raise
                finally:
                    self._runtime.queued(-len(batch))
        finally:
            self._task = None
            self._runtime.retire_if_idle(self)

    async def _handle_isolating(self, batch: list[Envelope]) -> None:
        """Handle a batch; if it fails inside pagerd, each message again alone, so only the
        one that fails is answered so: nothing else is held up by it."""
        try:
            await self._handle(batch)
        except Exception as error:  # one bad message must not stop the actor
            if len(batch) > 1:
                for envelope in batch:
                    await self._handle_isolating([envelope])
                return
            log.exception("actor.failed", service_id=self.service_id)
            metrics.ACTOR_FAILURES.inc()
            why = f"internal error: {error!r}"
            _reply_all(batch, Retryable(self.service_id, why, "internal_error"))

    async def _handle(self, batch: list[Envelope]) -> None:
        runtime = self._runtime
        directory = runtime.directory
        before = state = self.state
        rows = _Batch(self.service_id, service=self.unsaved_service)
        decided: list[tuple[Envelope, Decision | None, tuple[OutboxRow, ...]]] = []
        for envelope in batch:
            policy, heartbeat_s = directory.service_context(self.service_id)
            if policy is None:
                decided.append((envelope, None, ()))
                continue
            now = runtime.clock.now()
            decision = decide(
                state,
                envelope.event,
                policy,
                now,
                directory.rosters,
                rotas=directory.rotas,
                heartbeat_s=heartbeat_s,
            )
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
                _reply_all(batch, Retryable(self.service_id, f"not committed: {error}"))
                for team_id, advanced in rows.rotations.items():  # nobody was paged: no turn
                    directory.give_back(advanced, rows.rotations_before[team_id])
                # The state stays as committed; a timeout lost with this batch must come
                # again, but not in a tight loop against a failing disk.
                self._timer_key = self._window_key = None
                self.sync_timer(not_before=runtime.clock.now() + COMMIT_RETRY_DELAY)
                return
        self.unsaved_service = None
        self.state = state
        self.sync_timer()
        runtime.outbox.release(row for row in rows.outbox if row.status == "pending")
        for row in rows.outbox:
            if row.status == "failed":
                _report_failed_at_once(row)
        if rows.timeline:
            runtime.publisher.publish_events(self.service_id, (t for _, t in rows.timeline))
        if _visible(state) != _visible(before):
            # The retained state/{service} shows health, incident, status and level only:
            # an appended alert changes none of them and publishes nothing.
            runtime.publisher.publish_state(self.service_id, state, runtime.clock.now())
        for envelope, decided_by, notified in decided:
            self._finish(envelope, decided_by, notified)
            if decided_by is not None and decided_by.outcome in _MOOTING:
                incident = decided_by.state.incident
                assert incident is not None  # an ack or a resolution names its incident
                runtime.outbox.moot(incident.id, _MOOTING[decided_by.outcome])

    def _collect(
        self, before: ServiceState, decision: Decision, rows: _Batch, now: datetime
    ) -> tuple[OutboxRow, ...]:
        """Turn a decision's effects into rows of the pending write."""
        incident = decision.state.incident
        # ``decide`` returns the very same incident when it did not change (a beat that
        # only moves its deadline changes the state, not the incident).
        if incident is not None and incident is not before.incident:
            rows.incidents[incident.id] = incident
        notified: list[OutboxRow] = []
        for effect in decision.effects:
            match effect:
                case Notify():
                    row = _outbox_row(effect, now)
                    rows.outbox.append(row)
                    notified.append(row)
                case AdvanceRotation(roster=roster):
                    # At once, so the next decision (of this actor or another) pages the
                    # next developer; given back if this batch is not committed.
                    was = self._runtime.directory.advance(roster)
                    rows.rotations[roster.team_id] = roster
                    rows.rotations_before.setdefault(roster.team_id, was)
                case RecordAlert():
                    rows.alerts.append((self.service_id, effect))
                case RecordTimeline():
                    rows.timeline.append((self.service_id, effect))
                case RecordMaintenance(window=window):
                    rows.maintenance.append(window)
                case ArmTimer() | CancelTimer():
                    # The timer follows the committed state (see sync_timer): a batch
                    # of several decisions nets out to its final state's timer.
                    pass
                case _:
                    assert_never(effect)
        return tuple(notified)

    def sync_timer(self, not_before: datetime | None = None) -> None:
        """Arm the timers the committed state asks for (none before ``not_before``); cancel
        the others."""
        self._sync_ack_timer(not_before)
        self._sync_window_timer(not_before)
        self._sync_beat_timer(not_before)

    def _sync_ack_timer(self, not_before: datetime | None) -> None:
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

    def _sync_window_timer(self, not_before: datetime | None) -> None:
        window = self.state.maintenance
        wanted = None if window is None else window.until
        if wanted == self._window_key:
            return
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        self._window_key = wanted
        if wanted is not None:
            when = wanted if not_before is None else max(wanted, not_before)
            self._window_timer = self._runtime.clock.call_at(
                when, lambda: self._on_window_timer(wanted)
            )

    def _on_window_timer(self, until: datetime) -> None:
        self._window_timer = None  # the key stays, as for the ack timer
        self._runtime.queued(1)
        self.post(Envelope(MaintenanceOver(until)))

    def _sync_beat_timer(self, not_before: datetime | None) -> None:
        due = self.state.beat_due
        if due is not None and not_before is not None:
            due = max(due, not_before)
        armed_at = self._beat_armed_at
        if due is not None and armed_at is not None and armed_at <= due:
            return  # it fires first, and looks at the deadline then
        if self._beat_timer is not None:
            self._beat_timer.cancel()
            self._beat_timer = None
            self._beat_armed_at = None
        if due is not None:
            self._arm_beat_timer(due)

    def _arm_beat_timer(self, when: datetime) -> None:
        self._beat_armed_at = when
        self._beat_timer = self._runtime.clock.call_at(when, self._on_beat_timer)

    def _on_beat_timer(self) -> None:
        self._beat_timer = None
        self._beat_armed_at = None
        due = self.state.beat_due
        if due is None:
            return
        if due > self._runtime.clock.now():
            self._arm_beat_timer(due)  # a beat came since it was armed
            return
        self._runtime.queued(1)
        self.post(Envelope(BeatMissed(due, new_incident_id())))

    def abandon(self) -> None:
        """Stop: cancel the task, and answer what waits in the mailbox as not committed."""
        if self._task is not None:
            self._task.cancel()
        waiting = list(self.mailbox)
        self.mailbox.clear()
        self._runtime.queued(-len(waiting))
        _reply_all(waiting, Retryable(self.service_id, ABANDONED, "abandoned"))

    def cancel_timer(self) -> None:
        """Cancel every timer (shutdown, or the actor is replaced)."""
        for timer in (self._timer, self._window_timer, self._beat_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._window_timer = self._beat_timer = None
        self._timer_key = self._window_key = self._beat_armed_at = None

    def _finish(
        self, envelope: Envelope, decision: Decision | None, notified: tuple[OutboxRow, ...]
    ) -> None:
        if decision is None:
            service = self._runtime.directory.services.get(self.service_id)
            policy_id = None if service is None else service.policy_id
            log.error("policy.missing", service_id=self.service_id, policy_id=policy_id)
            why = f"service {self.service_id!r} has no policy {policy_id!r}"
            _reply(envelope, Refused(self.service_id, why, "no_policy"))
            return
        if decision.outcome is Outcome.BEAT_UNEXPECTED:
            why = f"service {self.service_id!r} expects no heartbeat: it has no heartbeat_s"
            _reply(envelope, Refused(self.service_id, why, "no_heartbeat"))
            return
        # A suppressed alert belongs to no incident, whatever the service's last one was.
        suppressed = decision.outcome is Outcome.SUPPRESSED
        incident = None if suppressed else decision.state.incident
        if decision.outcome is Outcome.OPENED:
            metrics.INCIDENTS_OPEN.inc()
        elif decision.outcome is Outcome.RESOLVED:
            metrics.INCIDENTS_OPEN.dec()
        _log_outcome(self.service_id, envelope.event, decision.outcome, incident)
        _DECIDED[decision.outcome].inc()
        _reply(envelope, Committed(self.service_id, decision.outcome, incident, notified))


def _outbox_row(notify: Notify, now: datetime) -> OutboxRow:
    # A page that reaches nobody is never sent: failed (it named nobody, which is an
    # error) or skipped (nobody is on call, which is not); either way it says why.
    status = "pending"
    if notify.failure is not None:
        status = "failed"
    elif notify.skipped is not None:
        status = "skipped"
    return OutboxRow(
        id=notify.notification_id,
        incident_id=notify.incident_id,
        service_id=notify.service_id,
        channel=notify.channel,
        recipient=notify.recipient,
        level=notify.level,
        step=notify.step,
        message=notify.message,
        created_at=now,
        developer_id=notify.developer_id,
        status=status,
        last_error=notify.failure if notify.failure is not None else notify.skipped,
    )


def _report_failed_at_once(row: OutboxRow) -> None:
    """A page that named nobody (a team without developers): loud, though never sent."""
    log.error("notification.failed", **row.log_fields(), attempts=0, reason=row.last_error)
    metrics.NOTIFICATIONS.labels(channel=row.channel, outcome="failed").inc()


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
        case LevelFailed():
            name = f"level_failed.{outcome.value}"
        case Healthy():
            name = f"healthy.{outcome.value}"
        case StartMaintenance() | EndMaintenance() | MaintenanceOver():
            name = f"maintenance.{outcome.value}"
        case Beat():
            name = f"heartbeat.{outcome.value}"
        case BeatMissed():
            name = f"heartbeat.missed.{outcome.value}"
        case Watch():
            name = f"heartbeat.{outcome.value}"
        case Note():
            name = "incident.note"
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


def _reply(envelope: Envelope, answer: Answer) -> None:
    if envelope.reply is not None:
        envelope.reply(answer)


def _reply_all(batch: list[Envelope], answer: Answer) -> None:
    for envelope in batch:
        _reply(envelope, answer)
