"""Start-up at scale, in process: services read by id, open incidents recovered in chunks,
timers on one wheel. Each real store (SQLite in tmp_path, PostgreSQL), a driven clock,
recorded pages."""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from pagerd.app import _collection_paused
from pagerd.core.domain import Ack, Alert, Incident, IncidentStatus, Outcome, ServiceState
from pagerd.core.policy import Level, Policy, SmsTarget
from pagerd.core.ports import Store
from pagerd.core.records import PolicyRow, ServiceRow, WriteBatch
from pagerd.runtime import directory as registry
from pagerd.runtime.answers import Answer, Committed, Refused
from pagerd.runtime.clock import TimerWheel
from pagerd.runtime.directory import Directory
from pagerd.runtime.ids import new_incident_id
from pagerd.runtime.router import Runtime
from tests.doubles import T0, DrivenClock, Recorder
from tests.harness import eventually
from tests.postgres import StoreLocation

ONE, TWO = SmsTarget("+15550000001"), SmsTarget("+15550000002")
POLICY = Policy("p", (Level((ONE,), 60.0), Level((TWO,), 60.0)))
OTHER = Policy("q", (Level((TWO,), 60.0),))


@dataclass
class World:
    store: Store
    directory: Directory
    clock: DrivenClock
    wheel: TimerWheel
    pages: Recorder
    group: asyncio.TaskGroup
    results: list[Answer] = field(default_factory=list)

    def runtime(self, fallback_policy: str = "") -> Runtime:
        return Runtime(
            store=self.store,
            directory=self.directory,
            clock=self.wheel,
            outbox=self.pages,
            publisher=self.pages,
            spawner=self.group,
            fallback_policy=fallback_policy,
        )


@pytest.fixture
async def world(store_location: StoreLocation) -> AsyncIterator[World]:
    store = await store_location.open()
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=True), PolicyRow(OTHER, managed=False)),
            services=tuple(ServiceRow(f"s{i}", f"S {i}", "p", managed=False) for i in range(5)),
        )
    )
    directory = await Directory.load(store)
    clock = DrivenClock()
    async with asyncio.TaskGroup() as group:
        yield World(store, directory, clock, TimerWheel(clock), Recorder(), group)
    directory.close()
    await store.close()


def open_incident(incident_id: str, deadline: datetime) -> Incident:
    return Incident(incident_id, "down", T0 - timedelta(minutes=5), ack_deadline=deadline)


# --- the directory -----------------------------------------------------------------------


async def test_directory_reads_a_service_committed_after_it_was_loaded(world: World) -> None:
    """Given a directory loaded before a service is written, when the service is asked for,
    then it is found with its policy; an unknown one is not."""
    await world.store.write(WriteBatch(services=(ServiceRow("late", "Late", "q", False),)))
    services = world.directory.services
    assert "late" in services
    assert world.directory.policy_for("late") == OTHER
    assert world.directory.policy_for("s3") == POLICY
    assert "ghost" not in services
    assert services.get("ghost") is None
    assert world.directory.policy_for("ghost") is None


async def test_rows_put_in_the_directory_show_with_the_stored_ones(world: World) -> None:
    """Given rows put before or after their commit, then they are found, and the services of
    a policy show them in place of the stored ones."""
    services = world.directory.services
    services.put(ServiceRow("new", "new", "q", managed=False))  # the router's fallback
    services.put(ServiceRow("s1", "Renamed", "q", managed=False))  # the API, committed

    found = services.get("s1")
    assert found is not None
    assert found.name == "Renamed"
    assert "new" in services
    assert services.using("q", limit=10) == ["new", "s1"]
    assert services.using("p", limit=10) == ["s0", "s2", "s3", "s4"]
    assert services.using("p", limit=2) == ["s0", "s2"]  # read past s1, now q's
    assert services.using("q", limit=1) == ["new"]


async def test_rows_read_are_forgotten_past_the_limit_and_read_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a cache of two rows, when five services are looked up, then every answer is
    still right, and a row set here is never forgotten."""
    monkeypatch.setattr(registry, "READ_CACHE_LIMIT", 2)
    services = world.directory.services
    services.put(ServiceRow("kept", "kept", "q", managed=False))
    for _ in range(2):
        names = [getattr(services.get(f"s{i}"), "name", None) for i in range(5)]
        assert names == [f"S {i}" for i in range(5)]
    assert world.directory.policy_for("kept") == OTHER


async def test_an_alert_registers_an_unknown_service_with_the_fallback(world: World) -> None:
    """Given a fallback policy, when an alert names an unknown service, then it is registered
    (in the same commit) and paged; an ack for an unknown service is still refused."""
    runtime = world.runtime(fallback_policy="q")
    runtime.submit("fresh", Alert("down", new_incident_id()), world.results.append)
    await eventually(lambda: bool(world.results))
    opened = world.results[0]
    assert isinstance(opened, Committed)
    assert opened.outcome is Outcome.OPENED
    assert [page.recipient for page in world.pages.pages] == [TWO.phone_number]
    reader = await world.store.service_reader()
    assert reader.get("fresh") == ServiceRow("fresh", "fresh", "q", managed=False)
    reader.close()
    runtime.submit("ghost", Ack(), world.results.append)
    refused = world.results[-1]
    assert isinstance(refused, Refused)
    assert refused.code == "unknown_service"
    await runtime.drained()
    runtime.stop_timers()


# --- recovery ------------------------------------------------------------------------------


async def test_recovery_in_chunks_fires_overdue_timers_at_once(world: World) -> None:
    """Given open incidents stored, one past its deadline, when they are recovered a chunk at
    a time, then each has its actor, one timer of the clock is armed (the earliest), and
    the overdue one escalates as soon as the loop runs."""
    later = T0 + timedelta(seconds=30)
    await world.store.write(
        WriteBatch(
            incidents=(
                ("s0", open_incident("i0", T0 - timedelta(seconds=1))),
                ("s1", open_incident("i1", later)),
                ("s2", open_incident("i2", later + timedelta(seconds=5))),
                ("s3", Incident("i3", "ok", T0, status=IncidentStatus.RESOLVED, resolved_at=T0)),
            )
        )
    )
    runtime = world.runtime()
    recovered: list[int] = []
    with _collection_paused():
        await world.store.read_open_states(
            lambda states: recovered.append(runtime.recover(states)), chunk=2
        )
    assert gc.isenabled()
    gc.unfreeze()
    assert recovered == [2, 1]
    assert sorted(s.service_id for s in runtime.live_states()) == ["s0", "s1", "s2"]
    assert world.wheel.pending() == 3
    assert world.clock.armed() == [T0 - timedelta(seconds=1)]

    world.clock.advance(0)
    await eventually(lambda: bool(world.pages.pages))
    await runtime.drained()
    assert [(p.service_id, p.recipient) for p in world.pages.pages] == [("s0", TWO.phone_number)]
    assert world.clock.armed() == [later]
    runtime.stop_timers()
    assert world.wheel.pending() == 0
    assert world.clock.armed() == []


async def test_recovering_a_service_twice_keeps_one_timer(world: World) -> None:
    """Given two open incidents of one service (in two chunks), then the later one wins and
    only its timer stays armed."""
    runtime = world.runtime()
    runtime.recover([ServiceState("s0", open_incident("old", T0 + timedelta(seconds=5)))])
    runtime.recover([ServiceState("s0", open_incident("new", T0 + timedelta(seconds=9)))])
    state = runtime.state_of("s0")
    assert state is not None
    assert state.incident is not None
    assert state.incident.id == "new"
    assert world.wheel.pending() == 1
    runtime.stop_timers()


async def test_timers_due_later_are_armed_after_recovery(world: World) -> None:
    """Given recovery arming only what is due within a minute, then the others are armed by
    arm_timers, once each, and not for an actor that recovery replaced."""
    runtime = world.runtime()
    soon, later = T0 + timedelta(seconds=30), T0 + timedelta(minutes=30)
    runtime.recover(
        [
            ServiceState("s0", open_incident("i0", soon)),
            ServiceState("s1", open_incident("i1", later)),
            ServiceState("s2", open_incident("i2", later)),
        ],
        arm_before=T0 + timedelta(minutes=1),
    )
    assert world.wheel.pending() == 1
    runtime.recover([ServiceState("s2", open_incident("i3", later + timedelta(minutes=1)))])
    assert world.wheel.pending() == 2

    await runtime.arm_timers(chunk=1)
    await runtime.arm_timers()
    assert world.wheel.pending() == 3
    world.clock.advance(31 * 60)
    await eventually(lambda: len(world.pages.pages) == 3)
    await runtime.drained()
    assert sorted(p.incident_id for p in world.pages.pages) == ["i0", "i1", "i3"]
    runtime.stop_timers()


# --- the timer wheel -----------------------------------------------------------------------


def test_wheel_fires_in_deadline_order_holding_one_clock_timer() -> None:
    """Given timers armed out of order, then the clock holds only the earliest, and each
    fires once, in deadline order (ties in arming order)."""
    clock = DrivenClock()
    wheel = TimerWheel(clock)
    fired: list[str] = []
    for name, seconds in (("c", 3), ("a", 1), ("b", 2), ("b2", 2)):
        wheel.call_at(T0 + timedelta(seconds=seconds), functools.partial(fired.append, name))
    assert clock.armed() == [T0 + timedelta(seconds=1)]

    clock.advance(1)
    assert fired == ["a"]
    assert clock.armed() == [T0 + timedelta(seconds=2)]
    clock.advance(5)
    assert fired == ["a", "b", "b2", "c"]  # all that is due, in one round
    assert wheel.pending() == 0
    assert clock.armed() == []


def test_wheel_cancelled_timers_never_fire_and_the_last_one_disarms() -> None:
    clock = DrivenClock()
    wheel = TimerWheel(clock)
    fired: list[int] = []
    handles = [
        wheel.call_at(T0 + timedelta(seconds=i), functools.partial(fired.append, i))
        for i in range(200)
    ]
    for handle in handles[:150]:  # enough to make the wheel rebuild its heap
        handle.cancel()
        handle.cancel()  # twice is harmless
    assert wheel.pending() == 50
    clock.advance(175)
    assert fired == list(range(150, 176))
    for handle in handles:
        handle.cancel()
    assert wheel.pending() == 0
    assert clock.armed() == []
    clock.advance(100)
    assert fired == list(range(150, 176))


def test_wheel_a_failing_callback_stops_no_other() -> None:
    clock = DrivenClock()
    wheel = TimerWheel(clock)
    fired: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    wheel.call_at(T0, fail)
    wheel.call_at(T0, lambda: fired.append("after"))
    clock.advance(0)
    assert fired == ["after"]
    assert wheel.pending() == 0


def test_wheel_arms_an_earlier_timer_set_by_a_callback() -> None:
    clock = DrivenClock()
    wheel = TimerWheel(clock)
    fired: list[str] = []

    def chain() -> None:
        fired.append("first")
        wheel.call_at(T0 + timedelta(seconds=2), lambda: fired.append("chained"))

    wheel.call_at(T0 + timedelta(seconds=1), chain)
    wheel.call_at(T0 + timedelta(seconds=10), lambda: fired.append("last"))
    clock.advance(1)
    assert clock.armed() == [T0 + timedelta(seconds=2)]
    clock.advance(9)
    clock.advance(0)
    assert fired == ["first", "chained", "last"]
