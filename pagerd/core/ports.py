"""The ports: what the runtime and the outbox need of the world, as Protocols.

Adapters implement them (the SQLite store, the MQTT publisher, the channel
senders, the system clock); the runtime and the outbox are written against them
only, so a second store or a test double plugs in without touching either.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pagerd.core.records import (
    AlertRow,
    DeadLetter,
    DeveloperRow,
    IncidentRow,
    OutboxRow,
    OverrideRow,
    PolicyRow,
    ScheduleRow,
    ServicePage,
    ServiceRow,
    TeamRow,
    WatchRow,
    WriteBatch,
)
from pagerd.core.values import Incident, RecordTimeline, ServiceState

# --- time --------------------------------------------------------------------------------


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the runtime needs of time: read it, and call back at an absolute time."""

    def now(self) -> datetime: ...

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle: ...


class Spawner(Protocol):
    """Starts the tasks the runtime owns (an ``asyncio.TaskGroup``)."""

    def create_task(
        self, coro: Coroutine[Any, Any, None], *, name: str | None = None
    ) -> asyncio.Task[None]: ...


# --- the store ---------------------------------------------------------------------------


class Writer(Protocol):
    """Commits units of work; returns once ``batch`` is durable, else raises StoreError."""

    async def write(self, batch: WriteBatch) -> None: ...


class ServiceLookup(Protocol):
    """Synchronous reads of the stored services, for the directory on the event loop."""

    def get(self, service_id: str) -> ServiceRow | None: ...

    def ids_using(self, policy_id: str, limit: int) -> list[str]: ...

    def close(self) -> None: ...


class DirectoryStore(Protocol):
    """The reads the directory is built from."""

    async def service_reader(self) -> ServiceLookup: ...

    async def load_policies(self) -> list[PolicyRow]: ...

    async def load_teams(self) -> list[TeamRow]: ...

    async def load_developers(self) -> list[DeveloperRow]: ...

    async def load_schedules(self) -> list[ScheduleRow]: ...

    async def load_overrides(self) -> list[OverrideRow]: ...

    async def last_override_id(self) -> int: ...


class OutboxStore(Writer, Protocol):
    """What the outbox dispatcher writes and reads."""

    async def notifications(self, incident_id: str) -> list[OutboxRow]: ...


class MetaStore(Writer, Protocol):
    """Small named values kept in the database (the acknowledge-link secret)."""

    async def get_meta(self, key: str) -> str | None: ...


class Store(DirectoryStore, OutboxStore, MetaStore, Protocol):
    """Everything pagerd asks of a store: what SQLite, and any other store, provides."""

    @property
    def write_error(self) -> str | None:
        """Why the last write failed, until one commits again."""

    def on_commit(self, callback: Callable[[int, float], None]) -> None: ...

    async def close(self) -> None: ...

    async def count_services(self) -> int: ...

    async def read_open_states(
        self, handle: Callable[[list[ServiceState]], object], *, chunk: int | None = None
    ) -> None: ...

    def services_listing(self, *, chunk: int | None = None) -> AsyncGenerator[bytes, None]: ...

    async def get_incident(self, incident_id: str) -> tuple[str, Incident] | None: ...

    async def open_incident_of(self, service_id: str) -> Incident | None: ...

    async def has_alert(self, incident_id: str, alert_id: str) -> bool: ...

    async def read_watches(self) -> list[WatchRow]: ...

    async def list_incidents(
        self,
        *,
        service_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: tuple[datetime, int] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[IncidentRow]: ...

    async def incident_row(self, incident_id: str) -> IncidentRow | None: ...

    async def service_alerts(
        self, service_id: str, *, limit: int, before: int | None = None
    ) -> list[AlertRow]: ...

    async def integration_key(self, service_id: str) -> str | None: ...

    async def service_of_integration_key(self, key: str) -> str | None: ...

    async def replace_integration_key(self, service_id: str) -> str: ...

    async def incident_alerts(
        self, incident_id: str, *, limit: int, before: int | None = None
    ) -> list[AlertRow]: ...

    async def services_page(
        self, *, unhealthy: bool, after: str, limit: int, text: str | None = None
    ) -> ServicePage: ...

    async def timeline(self, incident_id: str) -> list[tuple[datetime, str, dict[str, object]]]: ...

    async def pending_outbox(self, limit: int) -> list[OutboxRow]: ...

    async def dead_letters(self, limit: int) -> list[DeadLetter]: ...


# --- what the runtime hands on -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailedLevel:
    """Every page of ``step`` of an incident failed for good."""

    service_id: str
    incident_id: str
    step: int


class Outbox(Protocol):
    """Takes notifications once they are committed, and says when a level reached nobody."""

    def release(self, rows: Iterable[OutboxRow]) -> None: ...

    def moot(self, incident_id: str, why: str) -> None:
        """The incident was acknowledged or resolved: nothing more of it is to be sent."""

    def failed_levels(self) -> AsyncIterator[FailedLevel]: ...


@dataclass(frozen=True, slots=True)
class OnCallNow:
    """Who is on call on a schedule (None: nobody) until when (None: without end)."""

    developer_id: int | None
    name: str | None
    until: datetime | None


class Publisher(Protocol):
    """Announces state changes, timeline events and hand-overs (the MQTT topics of
    CONTRACT §3 and §8)."""

    def publish_state(self, service_id: str, state: ServiceState, at: datetime) -> None: ...

    def publish_events(self, service_id: str, events: Iterable[RecordTimeline]) -> None: ...

    def publish_on_call(self, schedule_id: str, on_call: OnCallNow | None) -> None:
        """The retained on-call of a schedule; None clears it (the schedule is gone)."""


# --- channels ----------------------------------------------------------------------------


class Verdict(enum.Enum):
    SENT = "sent"
    RETRY = "retry"  # 5xx, 429, timeout, connection error: try again later
    FAIL = "fail"  # any other refusal: retrying will not help
    # pagerd's own host ran short (descriptors, socket buffers, memory): no fault of the
    # provider's, so not an attempt; tried again soon.
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one delivery attempt went."""

    verdict: Verdict
    detail: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One notification ready to go: the row, and everything a channel shows of it."""

    row: OutboxRow
    service_name: str
    text: str  # the message body (an SMS keeps within 160 characters where it can)
    subject: str  # for email
    ack_url: str


class Sender(Protocol):
    """One channel: delivers a page, and says how it went (never raises for the network)."""

    async def send(self, page: Page) -> Attempt: ...
