"""The records pagerd keeps: the rows the store holds and the unit of work that writes them.

They are plain values shared by the runtime, the store adapters and the outbox; no
layer below the core defines its own. ``StoreError`` is how any store says a write
or a read failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pagerd.core.domain import Incident, RecordAlert, RecordTimeline
from pagerd.core.policy import Policy


class StoreError(Exception):
    """A write or the database failed; the message says what."""


@dataclass(frozen=True, slots=True)
class ServiceRow:
    id: str
    name: str
    policy_id: str
    managed: bool  # declared in the config file


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

    services: tuple[ServiceRow, ...] = ()
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
