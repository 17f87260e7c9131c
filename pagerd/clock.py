"""The one clock seam: wall time for the domain, and timers scheduled on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the runtime needs of time: read it, and call back at an absolute time."""

    def now(self) -> datetime: ...

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle: ...


class SystemClock:
    """Real UTC wall time; timers on the running loop's monotonic clock.

    A deadline in the past fires on the next loop iteration, which is what
    "an overdue timer fires at once after start-up" needs.
    """

    def now(self) -> datetime:
        return datetime.now(UTC)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        delay = max(0.0, (when - self.now()).total_seconds())
        return asyncio.get_running_loop().call_later(delay, callback)
