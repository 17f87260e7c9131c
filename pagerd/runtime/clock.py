"""The one clock seam: wall time for the domain, and timers scheduled on the event loop."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from pagerd.core.ports import Clock, TimerHandle

log = structlog.get_logger("pagerd.clock")

# The timer heap is rebuilt when cancelled entries outnumber live ones by this much.
COMPACT_SLACK = 64


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


class TimerWheel:
    """A Clock whose timers share one timer of the clock underneath: the earliest.

    A loop timer is a handle pushed on a heap of handles compared in Python, and
    start-up re-arms one per open incident. Here a timer is an entry of one heap
    compared in C, and only the earliest deadline holds a timer of the underlying
    clock. Deadlines are compared with the
    underlying clock's ``now()``: one that is past fires on the next loop iteration.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[datetime, int, _WheelTimer]] = []
        self._seq = 0  # FIFO among equal deadlines; never compares two timers
        self._live = 0
        self._armed: TimerHandle | None = None
        self._armed_for: datetime | None = None

    def now(self) -> datetime:
        return self._clock.now()

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        timer = _WheelTimer(self, callback)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, timer))
        self._live += 1
        self._arm_if_earlier(when)
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

    def _arm_if_earlier(self, when: datetime) -> None:
        if self._armed_for is None or when < self._armed_for:
            self._disarm()
            self._armed_for = when
            self._armed = self._clock.call_at(when, self._fire)

    def _disarm(self) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed = None
        self._armed_for = None

    def _fire(self) -> None:
        self._armed = None
        self._armed_for = None
        now = self._clock.now()
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
