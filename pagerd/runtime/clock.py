"""The one clock seam: wall time for the domain, and timers that fire on the monotonic clock.

Deadlines are absolute wall-clock times (the database keeps them so, for restarts),
but the wall clock steps: NTP, an operator, a VM resumed. A timer is therefore
placed on the monotonic clock when it is armed, as "this many seconds from now",
and fires by that clock alone, so a step of the wall clock afterwards moves no
escalation.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import structlog

from pagerd.core.ports import Clock, TimerHandle

log = structlog.get_logger("pagerd.clock")

# The timer heap is rebuilt when cancelled entries outnumber live ones by this much.
COMPACT_SLACK = 64


class SteadyClock(Clock, Protocol):
    """A Clock that also reads and schedules on a monotonic clock, which never steps."""

    def monotonic(self) -> float: ...

    def call_at_monotonic(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


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

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at_monotonic(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_at(when, callback)


class TimerWheel:
    """A Clock whose timers share one timer of the clock underneath: the earliest.

    A loop timer is a handle pushed on a heap of handles compared in Python, and
    start-up re-arms one per open incident. Here a timer is an entry of one heap
    compared in C, and only the earliest deadline holds a timer of the underlying
    clock.

    A wall-clock deadline becomes a monotonic one once, when it is armed; from then
    on only the monotonic clock decides when it is due. One that is past fires on
    the next loop iteration.
    """

    def __init__(self, clock: SteadyClock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, _WheelTimer]] = []
        self._seq = 0  # FIFO among equal deadlines; never compares two timers
        self._live = 0
        self._armed: TimerHandle | None = None
        self._armed_for: float | None = None

    def now(self) -> datetime:
        return self._clock.now()

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        clock = self._clock
        due = clock.monotonic() + (when - clock.now()).total_seconds()
        timer = _WheelTimer(self, callback)
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, timer))
        self._live += 1
        self._arm_if_earlier(due)
        return timer

    def pending(self) -> int:
        """Timers armed and not yet fired or cancelled."""
        return self._live

    def _cancelled(self) -> None:
        self._live -= 1
        if not self._live:
            self._heap.clear()
            self._disarm()
        elif len(self._heap) > 2 * self._live + COMPACT_SLACK:
            # A re-armed incident leaves its old entry behind until its deadline.
            self._heap = [entry for entry in self._heap if entry[2].callback is not None]
            heapq.heapify(self._heap)

    def _arm_if_earlier(self, due: float) -> None:
        if self._armed_for is None or due < self._armed_for:
            self._disarm()
            self._armed_for = due
            self._armed = self._clock.call_at_monotonic(due, self._fire)

    def _disarm(self) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed = None
        self._armed_for = None

    def _fire(self) -> None:
        self._armed = None
        self._armed_for = None
        now = self._clock.monotonic()
        heap = self._heap
        due: list[_WheelTimer] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        for timer in due:
            callback = timer.callback
            if callback is None:
                continue  # cancelled, or by an earlier callback of this round
            timer.callback = None
            self._live -= 1
            try:
                callback()
            except Exception:  # as the event loop does: one failing timer stops no other
                log.exception("timer.failed")
        heap = self._heap  # a cancel may have rebuilt it
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
        if heap:  # a callback may have armed an earlier one already
            self._arm_if_earlier(heap[0][0])


class _WheelTimer:
    __slots__ = ("_wheel", "callback")

    def __init__(self, wheel: TimerWheel, callback: Callable[[], None]) -> None:
        self._wheel = wheel
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._wheel._cancelled()
