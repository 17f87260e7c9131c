"""Heartbeats, maintenance windows and the schedule target in the actor runtime: a driven
clock, a real store (SQLite, then PostgreSQL; its writes counted), recorded pages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from pagerd.core.domain import (
    Alert,
    Beat,
    EndMaintenance,
    Event,
    Maintenance,
    Outcome,
    StartMaintenance,
)
from pagerd.core.policy import Level, Policy, ScheduleTarget, SmsTarget
from pagerd.core.ports import Store as PortStore
from pagerd.core.records import (
    DeveloperRow,
    OutboxRow,
    PolicyRow,
    ScheduleRow,
    ServiceRow,
    StoreError,
    TeamRow,
    WatchRow,
    WriteBatch,
)
from pagerd.core.schedules import Rotation, Schedule
from pagerd.runtime.answers import Answer, Committed, Refused
from pagerd.runtime.ids import new_incident_id
from pagerd.runtime.router import Runtime
from tests.assembly import assembled
from tests.doubles import T0, DrivenClock, Recorder
from tests.postgres import StoreLocation

ONE = SmsTarget("+15550000001")
POLICY = Policy("p", (Level((ONE,), 60.0),))
# T0 is Sun 22 Nov 2026 10:00 UTC: daily 10:30 hand-overs, developers 1 then 2.
DAILY = Schedule(1, "UTC", (Rotation(datetime(2026, 11, 21, 10, 30), 86400, (1, 2)),))
FOLLOW = Policy(
    "follow", (Level((ScheduleTarget("daily"),), 3600.0), Level((ScheduleTarget("daily"),), 3600.0))
)
BEAT_S = 30.0


@dataclass
class CountingStore:
    """The real store, counting the writes it is asked for, and failing on demand."""

    store: PortStore
    writes: int = 0
    failing: bool = False

    async def write(self, batch: WriteBatch) -> None:
        self.writes += 1
        if self.failing:
            raise StoreError("database or disk is full")
        await self.store.write(batch)


@dataclass
class World:
    runtime: Runtime
    clock: DrivenClock
    store: CountingStore
    pages: Recorder
    answers: list[Answer] = field(default_factory=list)

    def send(self, service_id: str, event: Event) -> None:
        self.runtime.submit(service_id, event, self.answers.append)

    async def settle(self) -> None:
        await self.runtime.drained()

    def outcomes(self) -> list[Outcome | None]:
        return [a.outcome if isinstance(a, Committed) else None for a in self.answers]

    def pages_of(self, service_id: str) -> list[OutboxRow]:
        return [p for p in self.pages.pages if p.service_id == service_id]


@pytest.fixture
async def world(store_location: StoreLocation) -> AsyncIterator[World]:
    store = await store_location.open()
    await store.write(
        WriteBatch(
            teams=(TeamRow(1, "claims", managed=False, cursor=0),),
            developers=(
                DeveloperRow(1, 1, "alice", "+15550000101"),
                DeveloperRow(2, 1, "bob", "+15550000102"),
            ),
            policies=(PolicyRow(POLICY, managed=True), PolicyRow(FOLLOW, managed=True)),
            schedules=(ScheduleRow("daily", DAILY, notify_handover=False, managed=True),),
            services=(
                ServiceRow("api", "API", "p", managed=True),
                ServiceRow("cron", "Cron", "p", managed=True, heartbeat_s=BEAT_S),
                ServiceRow("checkout", "Checkout", "follow", managed=True),
            ),
        )
    )
    clock = DrivenClock()
    counting = CountingStore(store)
    async with assembled(store, writer=counting, clock=clock) as assembly:
        assembly.runtime.watch(await store.read_watches())
        yield World(assembly.runtime, clock, counting, assembly.recorder)
    await store.close()


# --- heartbeats ------------------------------------------------------------------------------


async def test_start_up_gives_each_watched_service_one_full_interval(world: World) -> None:
    assert world.clock.armed() == [T0 + timedelta(seconds=BEAT_S)]
    world.clock.advance(BEAT_S - 0.1)
    await world.settle()
    assert world.pages.pages == []
    world.clock.advance(0.1)
    await world.settle()
    assert [p.message for p in world.pages.pages] == ["no heartbeat for 30 s"]


async def test_beats_that_change_nothing_cost_no_write_and_move_no_timer(world: World) -> None:
    """A thousand beats: no write, and the one heartbeat timer is not armed again for each."""
    armed_before = len(world.clock.timers)
    for _ in range(1000):
        world.clock.now_at += timedelta(seconds=0.01)
        world.send("cron", Beat())
    await world.settle()
    assert world.store.writes == 0
    assert set(world.outcomes()) == {Outcome.BEAT}
    assert len(world.clock.timers) == armed_before  # still the one armed at start-up

    # The timer fires at its old deadline, sees the beats, and arms itself once more.
    last_beat = world.clock.now_at
    world.clock.advance((T0 + timedelta(seconds=BEAT_S) - world.clock.now_at).total_seconds())
    await world.settle()
    assert world.pages.pages == []
    assert world.clock.armed() == [last_beat + timedelta(seconds=BEAT_S)]
    assert world.store.writes == 0


async def test_a_beat_to_an_idle_actor_is_answered_before_submit_returns(world: World) -> None:
    """A decision that writes nothing needs no task: the beat is answered in the caller's
    turn. One that writes (the missed beat's alert) is answered only once committed."""
    world.send("cron", Beat())
    assert world.outcomes() == [Outcome.BEAT]

    world.send("cron", Alert("disk full", new_incident_id()))
    assert world.outcomes() == [Outcome.BEAT]  # not before its commit
    await world.settle()
    assert world.outcomes() == [Outcome.BEAT, Outcome.OPENED]
    assert world.store.writes == 1


async def test_beats_during_an_incident_another_alert_opened_write_nothing(
    world: World,
) -> None:
    """The incident is open and unchanged by a beat: it is not written again."""
    world.send("cron", Alert("disk full", new_incident_id()))
    await world.settle()
    writes = world.store.writes
    for _ in range(100):
        world.send("cron", Beat())
        await world.settle()
    assert world.store.writes == writes
    assert world.runtime.open_incident("cron") is not None


async def test_one_missed_beat_pages_once_and_the_next_beat_resolves(world: World) -> None:
    world.clock.advance(BEAT_S)
    await world.settle()
    assert world.clock.armed() == [T0 + timedelta(seconds=BEAT_S + 60)]  # the ack timer only
    world.clock.advance(10 * BEAT_S)  # still silent: no second alert, no heartbeat timer
    await world.settle()
    assert len(world.pages.pages) == 1
    assert world.clock.armed() == []
    incident = world.runtime.open_incident("cron")
    assert incident is not None
    assert incident.opened_by == "heartbeat"

    world.send("cron", Beat())
    await world.settle()
    assert world.runtime.open_incident("cron") is None
    assert world.outcomes()[-1] is Outcome.RESOLVED
    assert world.clock.armed() == [world.clock.now_at + timedelta(seconds=BEAT_S)]


async def test_a_miss_that_cannot_be_committed_is_tried_again_a_second_later(
    world: World,
) -> None:
    world.store.failing = True
    world.clock.advance(BEAT_S)
    await world.settle()
    assert world.pages.pages == []
    assert world.clock.armed() == [T0 + timedelta(seconds=BEAT_S + 1)]
    world.store.failing = False
    world.clock.advance(1)
    await world.settle()
    assert [p.message for p in world.pages.pages] == ["no heartbeat for 30 s"]


async def test_a_beat_for_a_service_without_heartbeat_s_is_refused(world: World) -> None:
    world.send("api", Beat())
    await world.settle()
    [answer] = world.answers
    assert isinstance(answer, Refused)
    assert answer.code == "no_heartbeat"
    assert world.store.writes == 0


# --- maintenance windows ----------------------------------------------------------------------


async def test_a_window_suppresses_alerts_ends_by_its_timer_and_the_next_alert_pages(
    world: World,
) -> None:
    until = T0 + timedelta(minutes=30)
    world.send("api", StartMaintenance(until, "deploy"))
    await world.settle()
    assert world.clock.armed() == [T0 + timedelta(seconds=BEAT_S), until]
    for n in range(100):
        world.send("api", Alert(f"down {n}", new_incident_id()))
    await world.settle()
    assert world.pages_of("api") == []
    assert world.outcomes().count(Outcome.SUPPRESSED) == 100
    rows = await world.store.store.service_alerts("api", limit=1000)
    assert len(rows) == 100
    assert {r.incident_id for r in rows} == {None}
    assert (
        WatchRow("api", None, Maintenance(until, "deploy"))
        in await world.store.store.read_watches()
    )

    world.clock.advance(30 * 60)
    await world.settle()
    state = world.runtime.state_of("api")
    assert state is None or state.maintenance is None  # ended, and the idle actor retired
    assert [w.service_id for w in await world.store.store.read_watches()] == ["cron"]

    world.send("api", Alert("down again", new_incident_id()))
    await world.settle()
    assert [p.message for p in world.pages_of("api")] == ["down again"]


async def test_a_window_survives_a_restart_and_is_ended_at_once_if_past(
    store_location: StoreLocation,
) -> None:
    store = await store_location.open()
    try:
        await store.write(
            WriteBatch(
                policies=(PolicyRow(POLICY, managed=True),),
                services=(ServiceRow("api", "API", "p", managed=True),),
                maintenance=(("api", Maintenance(T0 - timedelta(seconds=5))),),
            )
        )
        clock = DrivenClock()
        async with assembled(store, clock=clock) as assembly:
            assert assembly.runtime.watch(await store.read_watches()) == 1
            assert clock.armed() == [T0 - timedelta(seconds=5)]
            clock.advance(0)
            await assembly.runtime.drained()
            assert await store.read_watches() == []
    finally:
        await store.close()


async def test_ending_a_window_early_cancels_its_timer(world: World) -> None:
    world.send("api", StartMaintenance(T0 + timedelta(hours=1)))
    world.send("api", EndMaintenance())
    world.send("api", EndMaintenance())
    await world.settle()
    assert world.outcomes() == [
        Outcome.MAINTENANCE_STARTED,
        Outcome.MAINTENANCE_ENDED,
        Outcome.NO_MAINTENANCE,
    ]
    assert world.clock.armed() == [T0 + timedelta(seconds=BEAT_S)]


# --- the schedule target ----------------------------------------------------------------------


async def test_the_page_goes_to_whoever_is_on_call_and_after_a_handover_to_the_next(
    world: World,
) -> None:
    """An alert at 10:00 pages alice (on call until 10:30); level 1 times out at 11:00,
    after the hand-over: level 2 pages bob."""
    world.send("checkout", Alert("checkout down", new_incident_id()))
    await world.settle()
    assert [(p.recipient, p.developer_id) for p in world.pages_of("checkout")] == [
        ("+15550000101", 1)
    ]

    world.clock.advance(3600)
    await asyncio.sleep(0)
    await world.settle()
    assert [(p.level, p.recipient, p.developer_id) for p in world.pages_of("checkout")] == [
        (1, "+15550000101", 1),
        (2, "+15550000102", 2),
    ]
