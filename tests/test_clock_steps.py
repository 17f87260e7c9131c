"""Steps of the wall clock move no escalation: timers fire by the monotonic clock.

A real SQLite store and the real runtime on a TimerWheel, over a clock whose wall
and monotonic times the test drives apart (tests/doubles.SteppedClock).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from pagerd.core.domain import Alert
from pagerd.core.policy import Level, Policy, SmsTarget
from pagerd.core.records import PolicyRow, ServiceRow, WriteBatch
from pagerd.runtime.clock import TimerWheel
from pagerd.runtime.directory import Directory
from pagerd.runtime.ids import new_incident_id
from pagerd.runtime.router import Runtime
from pagerd.store.sqlite import Store
from tests.doubles import T0, Recorder, SteppedClock

HOUR = 3600.0
FAST = Policy(
    "fast", (Level((SmsTarget("+15550000001"),), 60.0), Level((SmsTarget("+15550000002"),), 60.0))
)
SLOW = Policy(
    "slow", (Level((SmsTarget("+15550000003"),), 300.0), Level((SmsTarget("+15550000004"),), 300.0))
)
# (service, level) -> seconds after the alert at which the level is paged.
EXPECTED = {("fast", 1): 0.0, ("fast", 2): 60.0, ("slow", 1): 0.0, ("slow", 2): 300.0}
TICK_S = 0.25


@dataclass
class World:
    clock: SteppedClock
    runtime: Runtime
    pages: Recorder


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await Store.open(tmp_path / "pagerd.db")
    await store.write(
        WriteBatch(
            policies=(PolicyRow(FAST, managed=True), PolicyRow(SLOW, managed=True)),
            services=(
                ServiceRow("fast", "Fast", "fast", managed=True),
                ServiceRow("slow", "Slow", "slow", managed=True),
            ),
        )
    )
    directory = await Directory.load(store)
    clock = SteppedClock()
    pages = Recorder()
    async with asyncio.TaskGroup() as group:
        runtime = Runtime(
            store=store,
            directory=directory,
            clock=TimerWheel(clock),
            outbox=pages,
            publisher=pages,
            spawner=group,
        )
        yield World(clock, runtime, pages)
        await runtime.drained()
        runtime.stop_timers()
    directory.close()
    await store.close()


async def page_times(
    world: World, *, until_s: float, steps: dict[float, float]
) -> dict[tuple[str, int], float]:
    """Alert both services, run the monotonic clock to ``until_s`` in small ticks, stepping
    the wall clock by ``steps[at]`` at each ``at``; when each (service, level) was paged."""
    start = world.clock.monotonic()
    for service in ("fast", "slow"):
        world.runtime.submit(service, Alert("down", new_incident_id()))
    await world.runtime.drained()
    seen: dict[tuple[str, int], float] = {}
    pending_steps = sorted(steps.items())
    while True:
        elapsed = world.clock.monotonic() - start
        while pending_steps and pending_steps[0][0] <= elapsed:
            world.clock.step_wall(pending_steps.pop(0)[1])
        await world.runtime.drained()
        for page in world.pages.pages:
            seen.setdefault((page.service_id, page.level), elapsed)
        if elapsed >= until_s:
            return seen
        world.clock.advance(TICK_S)


@pytest.mark.parametrize("step_s", [HOUR, -HOUR], ids=["forward", "backward"])
@pytest.mark.parametrize("at_s", [10.0, 100.0], ids=["before-level-2", "after-level-2"])
async def test_a_wall_clock_step_of_an_hour_moves_no_escalation(
    world: World, step_s: float, at_s: float
) -> None:
    """Given two incidents escalating after 60 s and 300 s, when the wall clock steps an
    hour forward or back while they wait, then every level is paged within 1 s of its
    time by the monotonic clock, and never before it."""
    seen = await page_times(world, until_s=320.0, steps={at_s: step_s})

    assert set(seen) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        assert expected <= seen[key] <= expected + 1.0, (key, seen[key])


async def test_steps_back_and_forth_move_no_escalation(world: World) -> None:
    """Given steps of an hour each way and back again, then the levels still go on time."""
    seen = await page_times(
        world, until_s=320.0, steps={5.0: HOUR, 30.0: -2 * HOUR, 90.0: HOUR, 200.0: -HOUR}
    )

    for key, expected in EXPECTED.items():
        assert expected <= seen[key] <= expected + 1.0, (key, seen[key])


def test_wheel_fires_by_the_monotonic_clock_after_a_step() -> None:
    """Given timers armed at wall deadlines, when the wall clock steps, then each still
    fires after the delay it was armed with: not early, not late."""
    clock = SteppedClock()
    wheel = TimerWheel(clock)
    fired: list[tuple[str, float]] = []

    def note(name: str) -> None:
        fired.append((name, clock.monotonic() - 1000.0))

    wheel.call_at(T0 + timedelta(seconds=3), functools.partial(note, "3s"))
    wheel.call_at(T0 + timedelta(seconds=30), functools.partial(note, "30s"))
    clock.step_wall(-10)
    clock.advance(4)
    assert fired == [("3s", 3.0)]
    clock.step_wall(HOUR)
    clock.advance(25)
    assert fired == [("3s", 3.0)]
    clock.advance(1)
    assert fired == [("3s", 3.0), ("30s", 30.0)]
    # Armed after the steps: its delay counts from the wall clock as it is now.
    wheel.call_at(clock.now() + timedelta(seconds=5), functools.partial(note, "5s"))
    clock.advance(5)
    assert fired[-1] == ("5s", 35.0)
    assert wheel.pending() == 0
