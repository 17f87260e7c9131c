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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never

import msgspec
from msgspec.structs import replace

from pagerd.core.policy import (
    MAX_ALERT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    DomainError,
    EmailTarget,
    Policy,
    Roster,
    SmsTarget,
    Target,
    TeamTarget,
    WebhookTarget,
    require_text,
    validate_service_id,
)

NO_ROSTERS: Mapping[str, Roster] = {}

# --- state -------------------------------------------------------------------------------


class IncidentStatus(enum.StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# An open incident remembers at most this many of its alert ids: a repeat among them
# changes nothing without a write; one older than that is recorded once all the same,
# by the store's unique index on (incident, alert id).
MAX_REMEMBERED_ALERT_IDS = 1000


class AlertIds(Set[str]):
    """The alert ids an incident remembers: its most recent ones, at least half of
    ``MAX_REMEMBERED_ALERT_IDS`` and at most one more than it, in an immutable set.

    Disjoint frozensets whose sizes halve along the tuple, like the digits of a binary
    counter: adding an id merges the small ones at the end, so each id is copied
    O(log n) times in all (an alert storm on one service stays linear), a lookup asks
    O(log n) sets, and forgetting the oldest drops the first.
    """

    __slots__ = ("_parts",)

    def __init__(self, ids: Iterable[str] = ()) -> None:
        part = frozenset(ids)
        self._parts: tuple[frozenset[str], ...] = (part,) if part else ()

    def with_id(self, alert_id: str, *, keep: int = MAX_REMEMBERED_ALERT_IDS) -> AlertIds:
        """This set and ``alert_id``, the oldest forgotten past ``keep``."""
        if alert_id in self:
            return self
        merged = frozenset((alert_id,))
        parts = list(self._parts)
        while parts and len(parts[-1]) <= len(merged):
            merged = parts.pop() | merged
        parts.append(merged)
        total = sum(len(part) for part in parts)
        while len(parts) > 1 and total > keep:
            total -= len(parts.pop(0))
        grown = AlertIds()
        grown._parts = tuple(parts)
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


class LevelFailed(msgspec.Struct, frozen=True, gc=False):
    """Every page of ``step`` of ``incident_id`` failed for good: nobody was reached."""

    incident_id: str
    step: int


Event = Alert | Ack | AckTimeout | Healthy | LevelFailed


# --- effects -----------------------------------------------------------------------------


class Notify(msgspec.Struct, frozen=True, gc=False):
    """Page ``target`` for ``level`` (1-based) of an incident, on ``channel`` at ``recipient``.

    ``notification_id`` is deterministic (incident, step, target position), so a
    decision replayed after a crash names the same notification and the outbox
    and the receiver's ``Idempotency-Key`` can recognise it. A target that names
    nobody (a team without developers) still gets its notification, failed at
    once with ``failure`` saying why, so the incident's record shows it.
    """

    notification_id: str
    incident_id: str
    service_id: str
    step: int
    level: int
    target: Target
    message: str
    channel: str
    recipient: str
    developer_id: int | None = None
    failure: str | None = None


class AdvanceRotation(msgspec.Struct, frozen=True, gc=False):
    """A team's developer was picked: its rotation moves on to ``roster.cursor``."""

    roster: Roster


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


Effect = Notify | AdvanceRotation | ArmTimer | CancelTimer | RecordAlert | RecordTimeline


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


def decide(
    state: ServiceState,
    event: Event,
    policy: Policy,
    now: datetime,
    rosters: Mapping[str, Roster] = NO_ROSTERS,
) -> Decision:
    """Apply one event to a service's state under ``policy`` (as it is now) at ``now``.

    ``rosters`` are the teams' rotations by team name, as they are now: a team target
    pages the developer whose turn it is, and the decision says how the rotation moves.
    """
    match event:
        case Alert():
            return _on_alert(state, event, policy, now, rosters)
        case Ack():
            return _on_ack(state, event, now)
        case AckTimeout() | LevelFailed():
            return _on_escalation(state, event, policy, now, rosters)
        case Healthy():
            return _on_healthy(state, now)
        case _:
            assert_never(event)


def _on_alert(
    state: ServiceState, alert: Alert, policy: Policy, now: datetime, rosters: Mapping[str, Roster]
) -> Decision:
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
        paging = _Paging(state.service_id, policy, now, rosters)
        opened, pages = paging.page(opened, (0, 0), 0)
        effects = (_record(opened.id, alert, now), triggered, *pages)
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


def _on_escalation(
    state: ServiceState,
    timeout: AckTimeout | LevelFailed,
    policy: Policy,
    now: datetime,
    rosters: Mapping[str, Roster],
) -> Decision:
    """The ack timer of a step ran out, or every page of it failed: page the next level."""
    incident = state.open_incident
    if (
        incident is None
        or incident.id != timeout.incident_id
        or incident.status is not IncidentStatus.TRIGGERED
        or incident.ack_deadline is None
        or incident.step != timeout.step
    ):
        return Decision(state, (), Outcome.STALE_TIMEOUT)
    position = _next_position(incident, policy)
    if position is None:
        return Decision(replace(state, incident=_exhausted(incident)), (), Outcome.EXHAUSTED)
    outcome = Outcome.ESCALATED if position[1] == incident.round else Outcome.REPEATED
    failed = isinstance(timeout, LevelFailed)
    why = f"every page of level {incident.level} failed" if failed else None
    escalated_to = _escalated(incident, position, now, why)
    paging = _Paging(state.service_id, policy, now, rosters)
    advanced, effects = paging.page(incident, position, incident.step + 1)
    return Decision(replace(state, incident=advanced), (escalated_to, *effects), outcome)


def _next_position(incident: Incident, policy: Policy) -> tuple[int, int] | None:
    """(level index, round) after the incident's level; None after the last round (§6.4)."""
    if incident.level_index + 1 < len(policy.levels):
        return incident.level_index + 1, incident.round
    if incident.round < policy.repeat:
        return 0, incident.round + 1
    return None


def _exhausted(incident: Incident) -> Incident:
    # After the last level with no round left: nothing more is sent, the incident
    # stays open and triggered, and no timer is armed (CONTRACT §6.4).
    return replace(incident, ack_deadline=None, step=incident.step + 1)


def _escalated(
    incident: Incident, position: tuple[int, int], now: datetime, why: str | None
) -> RecordTimeline:
    detail: dict[str, str | int | None] = {
        "from_level": incident.level,
        "level": position[0] + 1,
        "round": position[1] + 1,
    }
    if why is not None:
        detail["reason"] = why
    return RecordTimeline(incident.id, "incident.escalated", now, detail)


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


@dataclass(frozen=True, slots=True)
class _Paging:
    """What paging a level of one service's incident needs to know, at one moment."""

    service_id: str
    policy: Policy
    now: datetime
    rosters: Mapping[str, Roster]

    def page(
        self, incident: Incident, position: tuple[int, int], step: int
    ) -> tuple[Incident, list[Effect]]:
        """Page the level at ``position`` (level index, round) and arm its timer.

        A level with nobody to page is passed at once, as when every page of a level
        failed, until a level reaches someone or the policy is run through.
        """
        effects: list[Effect] = []
        while True:
            paged, reached = self._page_level(incident, position, step, effects)
            if reached:
                return paged, effects
            position_after = _next_position(paged, self.policy)
            if position_after is None:
                return _exhausted(paged), effects
            why = f"nobody to page at level {position[0] + 1}"
            effects.append(_escalated(paged, position_after, self.now, why))
            incident, position, step = paged, position_after, step + 1

    def _page_level(
        self, incident: Incident, position: tuple[int, int], step: int, effects: list[Effect]
    ) -> tuple[Incident, bool]:
        """Notify each distinct target of a level once, appending to ``effects``; arm the
        level's timer if anyone could be paged. Returns the incident and whether anyone was."""
        level_index, round_ = position
        level = self.policy.levels[level_index]
        deadline = self.now + timedelta(seconds=level.ack_timeout_s)
        reached = False
        for index, target in enumerate(level.distinct_targets()):
            notify, advanced = self._notify(
                incident, f"{incident.id}-{step}-{index}", step, level_index + 1, target
            )
            effects.append(notify)
            if advanced is not None:
                effects.append(AdvanceRotation(advanced))
            if notify.failure is None:
                reached = True
                continue
            detail: dict[str, str | int | None] = {
                "notification_id": notify.notification_id,
                "channel": notify.channel,
                "level": notify.level,
                "error": notify.failure,
            }
            effects.append(RecordTimeline(incident.id, "notification.failed", self.now, detail))
        paged = replace(
            incident,
            level_index=level_index,
            round=round_,
            step=step,
            ack_deadline=deadline if reached else None,
        )
        if reached:
            effects.append(ArmTimer(incident.id, step, deadline))
        return paged, reached

    def _notify(
        self, incident: Incident, notification_id: str, step: int, level: int, target: Target
    ) -> tuple[Notify, Roster | None]:
        """The page of one target, and the team's rotation after it if a developer was picked."""
        developer_id: int | None = None
        failure: str | None = None
        advanced: Roster | None = None
        match target:
            case SmsTarget(phone_number=phone):
                channel, recipient = "sms", phone
            case EmailTarget(address=address):
                channel, recipient = "email", address
            case WebhookTarget(url=url):
                channel, recipient = "webhook", url
            case TeamTarget(team=team):
                channel, recipient = "sms", f"team:{team}"
                roster = self.rosters.get(team)
                picked = None if roster is None else roster.next_up()
                if picked is None:
                    failure = f"team {team!r} has nobody to page"
                else:
                    developer, advanced = picked
                    recipient, developer_id = developer.phone_number, developer.developer_id
            case _:
                assert_never(target)
        notify = Notify(
            notification_id=notification_id,
            incident_id=incident.id,
            service_id=self.service_id,
            step=step,
            level=level,
            target=target,
            message=incident.message,
            channel=channel,
            recipient=recipient,
            developer_id=developer_id,
            failure=failure,
        )
        return notify, advanced
