"""Test doubles for the runtime's ports: a clock the test drives, and a recorder of pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pagerd.core.domain import RecordTimeline, ServiceState
from pagerd.core.ports import FailedLevel
from pagerd.core.records import OutboxRow

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@dataclass
class DrivenClock:
    """Time moves only when the test says so; due timers then run."""

    now_at: datetime = T0
    timers: list[tuple[datetime, Callable[[], None], list[bool]]] = field(default_factory=list)

    def now(self) -> datetime:
        return self.now_at

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        cancelled = [False]
        self.timers.append((when, callback, cancelled))
        return TimerHandle(cancelled)

    def armed(self) -> list[datetime]:
        return sorted(when for when, _, cancelled in self.timers if not cancelled[0])

    def advance(self, seconds: float) -> None:
        self.now_at += timedelta(seconds=seconds)
        due = [t for t in self.timers if t[0] <= self.now_at and not t[2][0]]
        self.timers = [t for t in self.timers if t not in due]
        for _, callback, _ in sorted(due, key=lambda t: t[0]):
            callback()


@dataclass
class TimerHandle:
    cancelled: list[bool]

    def cancel(self) -> None:
        self.cancelled[0] = True


@dataclass
class Recorder:
    """Stands in for the outbox and the MQTT publisher: keeps what it is handed."""

    pages: list[OutboxRow] = field(default_factory=list)
    states: list[ServiceState] = field(default_factory=list)
    moots: list[tuple[str, str]] = field(default_factory=list)

    def release(self, rows: Iterable[OutboxRow]) -> None:
        self.pages.extend(rows)

    def moot(self, incident_id: str, why: str) -> None:
        self.moots.append((incident_id, why))

    async def failed_levels(self) -> AsyncIterator[FailedLevel]:
        for _ in ():  # a recorder's pages never fail
            yield _

    def publish_state(self, service_id: str, state: ServiceState, at: datetime) -> None:
        self.states.append(state)

    def publish_events(self, service_id: str, events: Iterable[RecordTimeline]) -> None:
        pass
