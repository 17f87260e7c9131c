"""The records pagerd keeps: the rows the store holds and the unit of work that writes them.

They are plain values shared by the runtime, the store adapters and the outbox; no
layer below the core defines its own. ``StoreError`` is how any store says a write
or a read failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pagerd.core.policy import Policy
from pagerd.core.schedules import Override, Schedule
from pagerd.core.values import Incident, Maintenance, RecordAlert, RecordTimeline


class StoreError(Exception):
    """A write or the database failed; the message says what."""


@dataclass(frozen=True, slots=True)
class ServiceRow:
    id: str
    name: str
    policy_id: str
    managed: bool  # declared in the config file
    heartbeat_s: float | None = None  # a beat is expected at least this often; None: none


@dataclass(frozen=True, slots=True)
class TeamRow:
    id: int
    name: str
    managed: bool
    cursor: int  # rotation position


@dataclass(frozen=True, slots=True)
class DeveloperRow:
    id: int
    team_id: int
    name: str
    phone_number: str


@dataclass(frozen=True, slots=True)
class PolicyRow:
    policy: Policy
    managed: bool


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule: its layers (``schedule``), and whether hand-overs are sent as SMS."""

    id: str
    schedule: Schedule
    notify_handover: bool
    managed: bool  # declared in the config file


@dataclass(frozen=True, slots=True)
class OverrideRow:
    """An override of a schedule; its id grows with creation (the latest wins)."""

    schedule_id: str
    override: Override


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert as stored: on its incident, or on none when maintenance suppressed it."""

    seq: int  # grows with arrival: the order of a service's alerts, and their cursor
    at: datetime
    message: str
    alert_id: str | None
    source: str | None
    incident_id: str | None


@dataclass(frozen=True, slots=True)
class WatchRow:
    """A service start-up must watch: its heartbeat interval, its maintenance window."""

    service_id: str
    heartbeat_s: float | None
    maintenance: Maintenance | None


# A notification of no incident's level: a notice (the SMS that a turn on call begins),
# sent as it is, never bundled, never cancelled as moot.
NOTICE_LEVEL = 0


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification to send; ``id`` is the domain's deterministic ``notification_id``."""

    id: str
    incident_id: str
    service_id: str
    channel: str  # "sms" | "email" | "webhook"
    recipient: str  # phone number, email address or URL
    level: int
    step: int
    message: str
    created_at: datetime
    developer_id: int | None = None
    status: str = "pending"  # pending | held | sent | failed | cancelled | skipped
    attempts: int = 0
    next_attempt_at: datetime | None = None  # None = now
    last_error: str | None = None

    @property
    def is_notice(self) -> bool:
        """A notice (``NOTICE_LEVEL``): its ``message`` is its whole text."""
        return self.level == NOTICE_LEVEL

    def log_fields(self) -> dict[str, str]:
        """What names this page in a log line."""
        return {
            "service_id": self.service_id,
            "incident_id": self.incident_id,
            "notification_id": self.id,
            "channel": self.channel,
            "recipient": self.recipient,
        }


@dataclass(frozen=True, slots=True)
class OutboxUpdate:
    id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """An incident as listed, with its place in the order incidents were first written."""

    seq: int  # breaks ties of ``opened_at``: with it, the key of a page of incidents
    service_id: str
    incident: Incident


@dataclass(frozen=True, slots=True)
class ServicePage:
    """A page of services as the API lists them: JSON objects joined by commas."""

    documents: bytes
    count: int
    last_id: str | None  # the key the next page starts after


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event pagerd could not take, kept for an operator to see (CONTRACT §9)."""

    at: datetime
    source: str  # the way in: "mqtt"
    topic: str
    payload: str  # as received, decoded as UTF-8 with replacements
    reason: str


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """One unit of work, committed whole or not at all."""

    # A new service gets an integration key of its own; a stored one keeps its key.
    services: tuple[ServiceRow, ...] = ()
    integration_keys: tuple[tuple[str, str], ...] = ()  # (service_id, key): replaced
    policies: tuple[PolicyRow, ...] = ()
    policies_deleted: tuple[str, ...] = ()
    teams: tuple[TeamRow, ...] = ()
    developers: tuple[DeveloperRow, ...] = ()
    team_cursors: tuple[tuple[int, int], ...] = ()  # (team_id, cursor)
    # (service_id, incident): alert_ids are not stored, and id, service_id, message and
    # opened_at are written once, as they never change.
    incidents: tuple[tuple[str, Incident], ...] = ()
    alerts: tuple[tuple[str, RecordAlert], ...] = ()  # (service_id, alert); duplicates ignored
    timeline: tuple[tuple[str, RecordTimeline], ...] = ()  # (service_id, event)
    outbox: tuple[OutboxRow, ...] = ()  # an id already present is ignored
    outbox_updates: tuple[OutboxUpdate, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()  # (key, value) upsert
    dead_letters: tuple[DeadLetter, ...] = ()
    schedules: tuple[ScheduleRow, ...] = ()  # upserted, their rotations replaced
    schedules_deleted: tuple[str, ...] = ()  # with their rotations and overrides
    overrides: tuple[OverrideRow, ...] = ()
    overrides_deleted: tuple[tuple[str, int], ...] = ()  # (schedule_id, override id)
    maintenance: tuple[tuple[str, Maintenance | None], ...] = ()  # (service_id, window)
