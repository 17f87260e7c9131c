"""The actor runtime in process: a driven clock, each real store (SQLite, PostgreSQL),
recorded pages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagerd.core.domain import Ack, Alert, Healthy, Outcome
from pagerd.core.policy import Level, Policy, SmsTarget, TeamTarget
from pagerd.core.ports import Store
from pagerd.core.records import DeveloperRow, PolicyRow, ServiceRow, StoreError, TeamRow, WriteBatch
from pagerd.runtime.actor import MAX_MESSAGES_PER_WRITE
from pagerd.runtime.answers import Answer, Committed, Refused, Retryable
from pagerd.runtime.ids import new_incident_id
from pagerd.runtime.router import FULL_AT, ROOM_AT, Runtime
from tests.assembly import assembled
from tests.doubles import T0, DrivenClock, Recorder
from tests.postgres import StoreLocation

ONE, TWO = SmsTarget("+15550000001"), SmsTarget("+15550000002")
POLICY = Policy("p", (Level((ONE,), 60.0), Level((TWO,), 60.0)))


@dataclass
class FlakyStore:
    """The real store, with a switch that makes the next writes fail like a full disk."""

    store: Store
    failing: bool = False
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event | None = None

    async def write(self, batch: WriteBatch) -> None:
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        if self.failing:
            raise StoreError("database or disk is full")
        await self.store.write(batch)


@dataclass
class World:
    runtime: Runtime
    clock: DrivenClock
    store: FlakyStore
    pages: Recorder
    results: list[Answer] = field(default_factory=list)

    def send(self, service_id: str, event: Alert | Ack | Healthy) -> None:
        self.runtime.submit(service_id, event, self.results.append)

    async def settle(self) -> None:
        await self.runtime.drained()

    def outcomes(self) -> list[Outcome | None]:
        return [r.outcome if isinstance(r, Committed) else None for r in self.results]


def alert(message: str = "down") -> Alert:
    return Alert(message, new_incident_id())


@pytest.fixture
async def world(store_location: StoreLocation) -> AsyncIterator[World]:
    store = await store_location.open()
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=True),),
            services=(ServiceRow("api", "API", "p", managed=True),),
        )
    )
    clock = DrivenClock()
    flaky = FlakyStore(store)
    async with assembled(store, writer=flaky, clock=clock) as assembly:
        yield World(assembly.runtime, clock, flaky, assembly.recorder)
    await store.close()


async def test_timer_escalates_once_after_the_deadline(world: World) -> None:
    """Given level 1 paged, when the clock passes the deadline, then level 2 is paged once."""
    world.send("api", alert())
    await world.settle()
    assert [p.recipient for p in world.pages.pages] == [ONE.phone_number]
    assert world.clock.armed() == [T0 + timedelta(seconds=60)]

    world.clock.advance(59.9)
    await world.settle()
    assert len(world.pages.pages) == 1
    world.clock.advance(0.1)
    await world.settle()
    assert [p.recipient for p in world.pages.pages] == [ONE.phone_number, TWO.phone_number]
    assert world.clock.armed() == [T0 + timedelta(seconds=120)]


async def test_timer_firing_during_a_commit_is_not_armed_twice(world: World) -> None:
    """Given a commit in flight, when the ack timer fires meanwhile, then exactly one
    timeout is decided and no duplicate timer is armed for the same step."""
    world.send("api", alert())
    await world.settle()
    world.store.release = asyncio.Event()
    world.store.entered.clear()
    world.send("api", alert("more"))  # its commit now waits
    await world.store.entered.wait()
    world.clock.advance(60)  # the timer fires while that commit is in flight
    assert world.clock.armed() == []
    world.store.release.set()
    await world.settle()

    assert world.outcomes().count(Outcome.STALE_TIMEOUT) == 0
    assert [p.recipient for p in world.pages.pages] == [ONE.phone_number, TWO.phone_number]
    assert world.clock.armed() == [T0 + timedelta(seconds=120)]


async def test_failed_commit_keeps_state_and_retries_a_lost_timeout(world: World) -> None:
    """Given the disk fails while a timeout is committed, then nothing is paged, the state
    stays as committed, and the timeout comes again (not at once) once the disk is back."""
    world.send("api", alert())
    await world.settle()
    world.store.failing = True
    world.clock.advance(60)
    await world.settle()
    assert len(world.pages.pages) == 1
    incident = world.runtime.open_incident("api")
    assert incident is not None
    assert incident.level == 1
    assert world.clock.armed() == [T0 + timedelta(seconds=61)]  # retried after a pause

    world.store.failing = False
    world.clock.advance(1)
    await world.settle()
    assert [p.recipient for p in world.pages.pages] == [ONE.phone_number, TWO.phone_number]


async def test_failed_commit_answers_each_message_with_the_reason(world: World) -> None:
    """Given a full disk, when an alert comes, then its sender is told it was not committed."""
    world.store.failing = True
    world.send("api", alert())
    await world.settle()
    (answer,) = world.results
    assert isinstance(answer, Retryable)
    assert "disk is full" in answer.reason
    # Still healthy as committed, so the actor has nothing to keep it in memory.
    assert world.runtime.state_of("api") is None
    assert await world.store.store.list_incidents(service_id="api", status=None, limit=1) == []


async def test_healthy_then_alert_in_one_batch_commits_both_incidents(world: World) -> None:
    """Given an open incident, when healthy and a new alert are handled in one write,
    then the first incident is stored resolved and the second open."""
    world.send("api", alert("first"))
    await world.settle()
    world.send("api", Healthy())
    world.send("api", alert("second"))
    await world.settle()
    rows = await world.store.store.list_incidents(service_id="api", status=None, limit=10)
    assert sorted(r.incident.status.value for r in rows) == ["resolved", "triggered"]


async def test_actor_retires_when_healthy_and_idle(world: World) -> None:
    """Given an incident resolved, when the actor has nothing left, then it leaves memory."""
    world.send("api", alert())
    await world.settle()
    assert world.runtime.state_of("api") is not None
    world.send("api", Healthy())
    await world.settle()
    assert world.runtime.state_of("api") is None
    assert world.clock.armed() == []


async def test_unknown_service_is_refused_without_a_fallback(world: World) -> None:
    """Given no fallback policy, when an event names an unregistered service, then refused."""
    world.send("ghost", alert())
    (answer,) = world.results
    assert isinstance(answer, Refused)
    assert answer.code == "unknown_service"
    assert answer.reason.startswith("unknown service 'ghost'")
    assert world.runtime.state_of("ghost") is None


async def test_state_is_published_only_when_what_it_shows_changes(world: World) -> None:
    """Given an open incident, when more alerts are appended, then no state is republished;
    an ack changes the status and is published."""
    world.send("api", alert())
    await world.settle()
    for _ in range(3):
        world.send("api", alert("again"))
        await world.settle()
    assert len(world.pages.states) == 1
    world.send("api", Ack())
    await world.settle()
    assert [s.incident.status.value for s in world.pages.states if s.incident] == [
        "triggered",
        "acknowledged",
    ]


async def test_failed_commit_gives_back_the_team_rotation_turn(world: World) -> None:
    """Given a team of two, when the commit of a page to it fails, then the developer it
    picked is picked again by the next page: nobody is skipped by a write that never was."""
    team = TeamRow(7, "db-oncall", managed=True, cursor=0)
    ana = DeveloperRow(1, 7, "Ana", "+15550007001")
    bo = DeveloperRow(2, 7, "Bo", "+15550007002")
    policy = Policy("t", (Level((TeamTarget("db-oncall"),), 60.0),))
    await world.store.store.write(
        WriteBatch(
            teams=(team,),
            developers=(ana, bo),
            policies=(PolicyRow(policy, managed=True),),
            services=(ServiceRow("db", "DB", "t", managed=True),),
        )
    )
    directory = world.runtime.directory
    directory.put_team(team)
    directory.add_developers([ana, bo])
    directory.policies["t"] = PolicyRow(policy, managed=True)
    directory.services.put(ServiceRow("db", "DB", "t", managed=True))

    world.store.failing = True
    world.send("db", alert())
    await world.settle()
    assert world.pages.pages == []
    world.store.failing = False
    world.send("db", alert())
    await world.settle()
    assert [p.recipient for p in world.pages.pages] == [ana.phone_number]
    assert directory.teams[7].cursor == 1


async def test_intake_is_told_it_may_go_on_once_the_mailboxes_are_down_to_room_at(
    world: World,
) -> None:
    """Given FULL_AT messages posted and not yet handled, the runtime is full; a waiter
    for room is called once, when they are down to ROOM_AT, and not before."""
    runtime = world.runtime
    for _ in range(FULL_AT):
        world.send("api", alert())
    assert runtime.full
    called: list[int] = []
    runtime.when_room(lambda: called.append(runtime.pending()))
    assert called == []

    await world.settle()

    assert runtime.pending() == 0
    assert len(called) == 1
    assert called[0] <= ROOM_AT
    assert called[0] > ROOM_AT - MAX_MESSAGES_PER_WRITE, "as soon as there was room"
    assert world.outcomes().count(Outcome.OPENED) == 1
    assert len(world.results) == FULL_AT


_FROM_CROCKFORD = str.maketrans(
    "0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv"
)


@given(st.integers(0, 2**50 - 1), st.integers(0, 2**50 - 1))
def test_an_incident_id_is_its_ms_then_30_random_bits_and_sorts_by_time(a: int, b: int) -> None:
    """An id is 16 Crockford base32 digits of ``ms << 30 | random``: it names its
    millisecond, and an id made later sorts after one made earlier."""
    first, second = new_incident_id(a), new_incident_id(b)
    assert len(first) == len(second) == 16
    assert int(first.translate(_FROM_CROCKFORD), 32) >> 30 == a
    assert int(second.translate(_FROM_CROCKFORD), 32) >> 30 == b
    if a < b:
        assert first < second


async def test_a_message_failing_inside_pagerd_holds_up_nothing_of_its_batch(
    world: World,
) -> None:
    """Given a message whose commit raises an unexpected error (an injected fault) in one
    batch with another, then the other is committed and answered as usual, and only the
    failing one is answered retryable, as an internal error."""
    original = world.store.write

    async def poisoned(batch: WriteBatch) -> None:
        if any(alert.message == "poison" for _, alert in batch.alerts):
            raise RuntimeError("injected fault")
        await original(batch)

    world.store.write = poisoned  # type: ignore[method-assign]
    world.send("api", alert("poison"))
    world.send("api", alert("down"))  # queued behind it: the two are one batch
    await world.settle()

    poison, down = world.results
    assert isinstance(poison, Retryable)
    assert (poison.code, poison.reason) == (
        "internal_error",
        "internal error: RuntimeError('injected fault')",
    )
    assert isinstance(down, Committed)
    assert down.outcome is Outcome.OPENED
