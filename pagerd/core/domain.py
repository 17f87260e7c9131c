"""The escalation core: what happens to a service when an event arrives.

Pure and synchronous: no asyncio, no I/O, no clock reads. ``decide`` takes the
service's state, one event, the escalation policy as it is *now*, the teams'
rotations and the current time, and returns the new state plus the effects the
runtime must carry out (notify, advance a rotation, arm or cancel the ack timer,
record an alert or a timeline event). Every rule of CONTRACT.md §6 is decided here.

The values made for every event (state, events, effects, decisions) are frozen
msgspec Structs: cheap to build and copy, and as none can hold a reference cycle,
the garbage collector does not track them (``gc=False``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Set
from datetime import datetime, timedelta
from typing import assert_never

import msgspec
from msgspec.structs import replace

from pagerd.core.policy import (
    MAX_ALERT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    DomainError,
    Policy,
    Target,
    require_text,
    validate_service_id,
)

# --- state -------------------------------------------------------------------------------


class IncidentStatus(enum.StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertIds(Set[str]):
    """The alert ids an incident has seen: an immutable set that grows in O(log n).

    A frozenset copied with each new id made an alert storm on one service quadratic
    (20,000 alerts took 6 s of the event loop). This keeps disjoint frozensets whose
    sizes halve along the tuple, like the digits of a binary counter: adding an id
    merges the small ones at the end, so each id is copied O(log n) times in all, and
    a lookup asks O(log n) sets.
    """

    __slots__ = ("_parts",)

    def __init__(self, ids: Iterable[str] = ()) -> None:
        part = frozenset(ids)
        self._parts: tuple[frozenset[str], ...] = (part,) if part else ()

    def with_id(self, alert_id: str) -> AlertIds:
        """This set and ``alert_id``."""
        if alert_id in self:
            return self
        merged = frozenset((alert_id,))
        parts = list(self._parts)
        while parts and len(parts[-1]) <= len(merged):
            merged = parts.pop() | merged
        grown = AlertIds()
        grown._parts = (*parts, merged)
        return grown

    def __contains__(self, alert_id: object) -> bool:
        return any(alert_id in part for part in self._parts)

    def __iter__(self) -> Iterator[str]:
        for part in self._parts:
            yield from part

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)

    def __hash__(self) -> int:
        return self._hash()

    def __repr__(self) -> str:
        return f"AlertIds({sorted(self)!r})"


class Incident(msgspec.Struct, frozen=True, gc=False):
    """An incident of one service. ``level_index`` is 0-based; people see ``level`` (1-based).

    ``step`` counts the escalation steps taken (0 when triggered) and is what an
    ack-timeout carries, so a timeout for any other step is stale. ``ack_deadline``
    is set exactly while a timer must be armed.
    """

    id: str
    message: str
    opened_at: datetime
    status: IncidentStatus = IncidentStatus.TRIGGERED
    level_index: int = 0
    round: int = 0
    step: int = 0
    ack_deadline: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    alert_count: int = 1
    alert_ids: AlertIds = msgspec.field(default_factory=AlertIds)

    @property
    def level(self) -> int:
        return self.level_index + 1

    @property
    def is_open(self) -> bool:
        return self.status is not IncidentStatus.RESOLVED


class ServiceState(msgspec.Struct, frozen=True, gc=False):
    """What the core knows of one service: its latest incident, open or resolved.

    The service is unhealthy exactly while that incident is open.
    """

    service_id: str
    incident: Incident | None = None

    def __post_init__(self) -> None:
        validate_service_id(self.service_id)

    @property
    def healthy(self) -> bool:
        return self.open_incident is None

    @property
    def open_incident(self) -> Incident | None:
        incident = self.incident
        return incident if incident is not None and incident.is_open else None


# --- events ------------------------------------------------------------------------------


class Alert(msgspec.Struct, frozen=True, gc=False):
    """A monitor says the service is failing.

    ``new_incident_id`` is the id the incident gets if this alert opens one; the
    runtime supplies it so the core stays free of randomness.
    """

    message: str
    new_incident_id: str
    alert_id: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message, str) or not 1 <= len(self.message) <= MAX_MESSAGE_CHARS:
            raise DomainError("message", f"must be 1..{MAX_MESSAGE_CHARS} characters")
        if self.alert_id is not None and not 1 <= len(self.alert_id) <= MAX_ALERT_ID_CHARS:
            raise DomainError("alert_id", f"must be 1..{MAX_ALERT_ID_CHARS} characters")
        require_text(self.new_incident_id, "new_incident_id")


class Ack(msgspec.Struct, frozen=True, gc=False):
    """Someone acknowledges the open incident (only ``incident_id``, if given)."""

    incident_id: str | None = None
    by: str | None = None


class AckTimeout(msgspec.Struct, frozen=True, gc=False):
    """The ack timer armed for ``step`` of ``incident_id`` ran out."""

    incident_id: str
    step: int


class Healthy(msgspec.Struct, frozen=True, gc=False):
    """The service is healthy again."""


Event = Alert | Ack | AckTimeout | Healthy


# --- effects -----------------------------------------------------------------------------


class Notify(msgspec.Struct, frozen=True, gc=False):
    """Page ``target`` for ``level`` (1-based) of an incident.

    ``notification_id`` is deterministic (incident, step, target position), so a
    decision replayed after a crash names the same notification and the outbox
    and the receiver's ``Idempotency-Key`` can recognise it.
    """

    notification_id: str
    incident_id: str
    service_id: str
    step: int
    level: int
    target: Target
    message: str


class ArmTimer(msgspec.Struct, frozen=True, gc=False):
    """Arm the service's ack timer: at ``deadline`` post ``AckTimeout(incident_id, step)``."""

    incident_id: str
    step: int
    deadline: datetime


class CancelTimer(msgspec.Struct, frozen=True, gc=False):
    """Cancel the service's ack timer, if any."""

    incident_id: str


class RecordAlert(msgspec.Struct, frozen=True, gc=False):
    """Store an alert on an incident."""

    incident_id: str
    message: str
    alert_id: str | None
    source: str | None
    at: datetime


class RecordTimeline(msgspec.Struct, frozen=True, gc=False):
    """Append an event (``incident.triggered``, ...) to the incident's timeline."""

    incident_id: str
    type: str
    at: datetime
    detail: Mapping[str, str | int | None]


Effect = Notify | ArmTimer | CancelTimer | RecordAlert | RecordTimeline


class Outcome(enum.StrEnum):
    """What a decision amounted to: answers the API and names the log line."""

    OPENED = "opened"
    APPENDED = "appended"
    DUPLICATE_ALERT = "duplicate_alert"
    ACKNOWLEDGED = "acknowledged"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    NO_SUCH_OPEN_INCIDENT = "no_such_open_incident"
    ESCALATED = "escalated"
    REPEATED = "repeated"
    EXHAUSTED = "exhausted"
    STALE_TIMEOUT = "stale_timeout"
    RESOLVED = "resolved"
    ALREADY_HEALTHY = "already_healthy"


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The new state, the effects to carry out, and what it amounted to.

    When nothing changed, ``state`` is the very object that was passed in.
    """

    state: ServiceState
    effects: tuple[Effect, ...]
    outcome: Outcome


# --- the decision ------------------------------------------------------------------------


def decide(state: ServiceState, event: Event, policy: Policy, now: datetime) -> Decision:
    """Apply one event to a service's state under ``policy`` (as it is now) at ``now``."""
    match event:
        case Alert():
            return _on_alert(state, event, policy, now)
        case Ack():
            return _on_ack(state, event, now)
        case AckTimeout():
            return _on_timeout(state, event, policy, now)
        case Healthy():
            return _on_healthy(state, now)
        case _:
            assert_never(event)


def _on_alert(state: ServiceState, alert: Alert, policy: Policy, now: datetime) -> Decision:
    incident = state.open_incident
    if incident is None:
        opened = Incident(
            id=alert.new_incident_id,
            message=alert.message,
            opened_at=now,
            alert_ids=AlertIds(() if alert.alert_id is None else (alert.alert_id,)),
        )
        triggered = RecordTimeline(
            opened.id, "incident.triggered", now, {"message": alert.message, "level": 1}
        )
        opened, paging = _page_level(
            state.service_id, opened, policy, level_index=0, round_=0, step=0, now=now
        )
        effects = (_record(opened.id, alert, now), triggered, *paging)
        return Decision(replace(state, incident=opened), effects, Outcome.OPENED)

    if alert.alert_id is not None and alert.alert_id in incident.alert_ids:
        return Decision(state, (), Outcome.DUPLICATE_ALERT)
    seen = incident.alert_ids
    if alert.alert_id is not None:
        seen = seen.with_id(alert.alert_id)
    appended = replace(incident, alert_count=incident.alert_count + 1, alert_ids=seen)
    return Decision(
        replace(state, incident=appended), (_record(incident.id, alert, now),), Outcome.APPENDED
    )


def _record(incident_id: str, alert: Alert, now: datetime) -> RecordAlert:
    return RecordAlert(incident_id, alert.message, alert.alert_id, alert.source, now)


def _on_ack(state: ServiceState, ack: Ack, now: datetime) -> Decision:
    incident = state.open_incident
    if incident is None or (ack.incident_id is not None and ack.incident_id != incident.id):
        return Decision(state, (), Outcome.NO_SUCH_OPEN_INCIDENT)
    if incident.status is IncidentStatus.ACKNOWLEDGED:
        return Decision(state, (), Outcome.ALREADY_ACKNOWLEDGED)
    acked = replace(
        incident,
        status=IncidentStatus.ACKNOWLEDGED,
        acknowledged_at=now,
        acknowledged_by=ack.by,
        ack_deadline=None,
    )
    effects: list[Effect] = []
    if incident.ack_deadline is not None:
        effects.append(CancelTimer(incident.id))
    effects.append(
        RecordTimeline(
            incident.id, "incident.acknowledged", now, {"by": ack.by, "level": incident.level}
        )
    )
    return Decision(replace(state, incident=acked), tuple(effects), Outcome.ACKNOWLEDGED)


def _on_timeout(
    state: ServiceState, timeout: AckTimeout, policy: Policy, now: datetime
) -> Decision:
    incident = state.open_incident
    if (
        incident is None
        or incident.id != timeout.incident_id
        or incident.status is not IncidentStatus.TRIGGERED
        or incident.ack_deadline is None
        or incident.step != timeout.step
    ):
        return Decision(state, (), Outcome.STALE_TIMEOUT)

    next_index = incident.level_index + 1
    if next_index < len(policy.levels):
        level_index, round_, outcome = next_index, incident.round, Outcome.ESCALATED
    elif incident.round < policy.repeat:
        level_index, round_, outcome = 0, incident.round + 1, Outcome.REPEATED
    else:
        # After the last level with no round left: nothing more is sent, the incident
        # stays open and triggered, and no timer is armed (CONTRACT §6.4).
        exhausted = replace(incident, ack_deadline=None, step=incident.step + 1)
        return Decision(replace(state, incident=exhausted), (), Outcome.EXHAUSTED)

    escalated_to = RecordTimeline(
        incident.id,
        "incident.escalated",
        now,
        {"from_level": incident.level, "level": level_index + 1, "round": round_ + 1},
    )
    advanced, paging = _page_level(
        state.service_id,
        incident,
        policy,
        level_index=level_index,
        round_=round_,
        step=incident.step + 1,
        now=now,
    )
    return Decision(replace(state, incident=advanced), (escalated_to, *paging), outcome)


def _on_healthy(state: ServiceState, now: datetime) -> Decision:
    incident = state.open_incident
    if incident is None:
        return Decision(state, (), Outcome.ALREADY_HEALTHY)
    resolved = replace(incident, status=IncidentStatus.RESOLVED, resolved_at=now, ack_deadline=None)
    effects: list[Effect] = []
    if incident.ack_deadline is not None:
        effects.append(CancelTimer(incident.id))
    effects.append(RecordTimeline(incident.id, "incident.resolved", now, {"level": incident.level}))
    return Decision(replace(state, incident=resolved), tuple(effects), Outcome.RESOLVED)


def _page_level(
    service_id: str,
    incident: Incident,
    policy: Policy,
    *,
    level_index: int,
    round_: int,
    step: int,
    now: datetime,
) -> tuple[Incident, tuple[Effect, ...]]:
    """Move ``incident`` to a level: notify each distinct target once and arm its timer."""
    level = policy.levels[level_index]
    deadline = now + timedelta(seconds=level.ack_timeout_s)
    paged = replace(
        incident, level_index=level_index, round=round_, step=step, ack_deadline=deadline
    )
    notifications = tuple(
        Notify(
            notification_id=f"{incident.id}-{step}-{position}",
            incident_id=incident.id,
            service_id=service_id,
            step=step,
            level=level_index + 1,
            target=target,
            message=incident.message,
        )
        for position, target in enumerate(level.distinct_targets())
    )
    return paged, (*notifications, ArmTimer(incident.id, step, deadline))
