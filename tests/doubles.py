"""Test doubles for the runtime's ports: clocks the test drives, and a recorder of pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pagerd.core.domain import RecordTimeline, ServiceState
from pagerd.core.ports import FailedLevel, OnCallNow
from pagerd.core.records import OutboxRow

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@dataclass
class DrivenClock:
    """Time moves only when the test says so; due timers then run.

    Its monotonic clock is the seconds since T0: wall and monotonic time move together.
    """

    now_at: datetime = T0
    timers: list[tuple[datetime, Callable[[], None], list[bool]]] = field(default_factory=list)

    def now(self) -> datetime:
        return self.now_at

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        cancelled = [False]
        self.timers.append((when, callback, cancelled))
        return TimerHandle(cancelled)

    def monotonic(self) -> float:
        return (self.now_at - T0).total_seconds()

    def call_at_monotonic(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(T0 + timedelta(seconds=when), callback)

    def armed(self) -> list[datetime]:
        return sorted(when for when, _, cancelled in self.timers if not cancelled[0])

    def advance(self, seconds: float) -> None:
        self.now_at += timedelta(seconds=seconds)
        due = [t for t in self.timers if t[0] <= self.now_at and not t[2][0]]
        self.timers = [t for t in self.timers if t not in due]
        for _, callback, _ in sorted(due, key=lambda t: t[0]):
            callback()


@dataclass
class SteppedClock:
    """Wall and monotonic time driven apart, as on a host whose wall clock is stepped.

    Timers fire by the monotonic clock only. ``call_at`` behaves as ``SystemClock``'s:
    a wall-clock deadline becomes a delay when it is armed.
    """

    wall: datetime = T0
    mono: float = 1000.0
    timers: list[tuple[float, int, Callable[[], None], list[bool]]] = field(default_factory=list)
    _seq: int = 0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def call_at_monotonic(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        cancelled = [False]
        self._seq += 1
        self.timers.append((when, self._seq, callback, cancelled))
        return TimerHandle(cancelled)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        delay = max(0.0, (when - self.wall).total_seconds())
        return self.call_at_monotonic(self.mono + delay, callback)

    def step_wall(self, seconds: float) -> None:
        """The wall clock jumps (NTP, an operator); the monotonic clock does not."""
        self.wall += timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        """Both clocks move on; each timer due by then runs, in deadline order."""
        end = self.mono + seconds
        while True:
            live = [t for t in self.timers if not t[3][0]]
            due = min((t for t in live if t[0] <= end), default=None, key=lambda t: t[:2])
            if due is None:
                break
            self.timers.remove(due)
            step = max(0.0, due[0] - self.mono)
            self.mono += step
            self.wall += timedelta(seconds=step)
            due[2]()
        self.wall += timedelta(seconds=end - self.mono)
        self.mono = end


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
    on_call: list[tuple[str, OnCallNow | None]] = field(default_factory=list)

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

    def publish_on_call(self, schedule_id: str, on_call: OnCallNow | None) -> None:
        self.on_call.append((schedule_id, on_call))
