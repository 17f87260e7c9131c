"""The values the escalation core works with: a service's state, events, effects, decisions.

The values made for every event (state, events, effects, decisions) are frozen
msgspec Structs: cheap to build and copy, and as none can hold a reference cycle,
the garbage collector does not track them (``gc=False``). ``pagerd.core.domain``
decides; ``pagerd.core.paging`` pages a level.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Set
from datetime import datetime

import msgspec

from pagerd.core.policy import (
    MAX_ALERT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    DomainError,
    Roster,
    Target,
    require_text,
    validate_service_id,
)

MAX_NOTE_CHARS = 4096

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
    # The alert id of the alert that opened it: a beat resolves only an incident that a
    # missed heartbeat opened (HEARTBEAT_ALERT_ID).
    opened_by: str | None = None

    @property
    def level(self) -> int:
        return self.level_index + 1

    @property
    def is_open(self) -> bool:
        return self.status is not IncidentStatus.RESOLVED


class Maintenance(msgspec.Struct, frozen=True, gc=False):
    """A maintenance window: until ``until`` an alert opens no incident and pages nobody."""

    until: datetime
    reason: str | None = None


class ServiceState(msgspec.Struct, frozen=True, gc=False):
    """What the core knows of one service: its latest incident, open or resolved, its
    maintenance window, and when its next heartbeat is due.

    The service is unhealthy exactly while that incident is open. ``beat_due`` is kept in
    memory only (a beat costs no write): it is set exactly while the service is watched
    for heartbeats and no beat is missed; after a miss it is None until the next beat.
    """

    service_id: str
    incident: Incident | None = None
    maintenance: Maintenance | None = None
    beat_due: datetime | None = None

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


# The alert id of the alert a missed heartbeat raises (CONTRACT §8).
HEARTBEAT_ALERT_ID = "heartbeat"


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
    """Someone acknowledges the open incident (only ``incident_id``, if given).

    ``by`` names who (a person, or the target a link was sent to); ``via`` the way it
    came (``sms``, ``email`` or ``webhook`` for a page's link, ``console``, ``api``, ...).
    """

    incident_id: str | None = None
    by: str | None = None
    via: str | None = None


class AckTimeout(msgspec.Struct, frozen=True, gc=False):
    """The ack timer armed for ``step`` of ``incident_id`` ran out."""

    incident_id: str
    step: int


class Healthy(msgspec.Struct, frozen=True, gc=False):
    """The service is healthy again; ``by`` and ``via`` as an ack's, when a person says so."""

    by: str | None = None
    via: str | None = None


class Note(msgspec.Struct, frozen=True, gc=False):
    """Someone writes a note on an incident of the service, open or resolved.

    The way in checks that the incident is the service's (the state here knows only its
    latest); the note is decided by the service's actor so that it takes its place
    among the incident's other events.
    """

    incident_id: str
    text: str
    by: str | None = None

    def __post_init__(self) -> None:
        require_text(self.incident_id, "incident_id")
        if not isinstance(self.text, str) or not 1 <= len(self.text) <= MAX_NOTE_CHARS:
            raise DomainError("text", f"must be 1..{MAX_NOTE_CHARS} characters")


class LevelFailed(msgspec.Struct, frozen=True, gc=False):
    """Every page of ``step`` of ``incident_id`` failed for good: nobody was reached."""

    incident_id: str
    step: int


class StartMaintenance(msgspec.Struct, frozen=True, gc=False):
    """Put the service in maintenance until ``until`` (a window already open is replaced)."""

    until: datetime
    reason: str | None = None


class EndMaintenance(msgspec.Struct, frozen=True, gc=False):
    """End the service's maintenance window now, if it has one."""


class MaintenanceOver(msgspec.Struct, frozen=True, gc=False):
    """The timer of the window that ends at ``until`` ran out."""

    until: datetime


class Beat(msgspec.Struct, frozen=True, gc=False):
    """A heartbeat of the service's monitor."""


class BeatMissed(msgspec.Struct, frozen=True, gc=False):
    """The heartbeat due at ``due`` did not come. ``new_incident_id`` as for an Alert."""

    due: datetime
    new_incident_id: str


class Watch(msgspec.Struct, frozen=True, gc=False):
    """The service's ``heartbeat_s`` was set, changed or removed: watch it anew from now."""


Event = (
    Alert
    | Ack
    | AckTimeout
    | Healthy
    | LevelFailed
    | StartMaintenance
    | EndMaintenance
    | MaintenanceOver
    | Beat
    | BeatMissed
    | Watch
    | Note
)


# --- effects -----------------------------------------------------------------------------


class Notify(msgspec.Struct, frozen=True, gc=False):
    """Page ``target`` for ``level`` (1-based) of an incident, on ``channel`` at ``recipient``.

    ``notification_id`` is deterministic (incident, step, target position), so a
    decision replayed after a crash names the same notification and the outbox
    and the receiver's ``Idempotency-Key`` can recognise it. A target that names
    nobody (a team without developers) still gets its notification, failed at
    once with ``failure`` saying why, so the incident's record shows it. A schedule
    with nobody on call is no failure: its notification is ``skipped``, saying why.
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
    skipped: str | None = None

    @property
    def reaches_someone(self) -> bool:
        return self.failure is None and self.skipped is None


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
    """Store an alert on an incident, or on none (``incident_id`` None): it was
    suppressed by a maintenance window."""

    incident_id: str | None
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


class RecordMaintenance(msgspec.Struct, frozen=True, gc=False):
    """Store the service's maintenance window (None: it has none any more)."""

    window: Maintenance | None


Effect = (
    Notify
    | AdvanceRotation
    | ArmTimer
    | CancelTimer
    | RecordAlert
    | RecordTimeline
    | RecordMaintenance
)


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
    SUPPRESSED = "suppressed"  # recorded, no incident: the service is in maintenance
    MAINTENANCE_STARTED = "maintenance_started"
    MAINTENANCE_ENDED = "maintenance_ended"
    NO_MAINTENANCE = "no_maintenance"
    BEAT = "beat"  # the next beat is due later; nothing to write
    BEAT_UNEXPECTED = "beat_unexpected"  # the service has no heartbeat_s
    WATCHED = "watched"
    NOTED = "noted"


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The new state, the effects to carry out, and what it amounted to.

    When nothing changed, ``state`` is the very object that was passed in.
    """

    state: ServiceState
    effects: tuple[Effect, ...]
    outcome: Outcome
