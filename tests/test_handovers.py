"""Hand-overs announced (pagerd.runtime.handovers): a driven clock, the real store and
directory, the publisher and outbox recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pagerd.core.ports import OnCallNow
from pagerd.core.records import DeveloperRow, ScheduleRow, TeamRow, WriteBatch
from pagerd.core.schedules import Override, Overrides, Rota, Rotation, Schedule
from pagerd.runtime.directory import Directory
from pagerd.runtime.handovers import Handovers, notice_text, stretch
from pagerd.runtime.schedule_book import ScheduleBook
from pagerd.store.sqlite import Store
from tests.doubles import T0, DrivenClock, Recorder
from tests.harness import eventually

# T0 is Sun 22 Nov 2026 10:00 UTC. Daily at 10:30 UTC: alice (1), bob (2), alice, ...
DAILY = Schedule(1, "UTC", (Rotation(datetime(2026, 11, 21, 10, 30), 86400, (1, 2)),))
HANDOVER = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


@dataclass
class World:
    store: Store
    directory: Directory
    book: ScheduleBook
    clock: DrivenClock
    recorded: Recorder
    handovers: Handovers

    def announced(self) -> list[tuple[str, OnCallNow | None]]:
        return self.recorded.on_call

    async def pages(self, count: int) -> list[int | None]:
        """The developers texted, once ``count`` notices are written and released."""
        await eventually(lambda: len(self.recorded.pages) >= count, what=f"{count} notices")
        return [p.developer_id for p in self.recorded.pages]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = await Store.open(tmp_path / "pagerd.db")
    await store.write(
        WriteBatch(
            teams=(TeamRow(1, "claims", managed=False, cursor=0),),
            developers=(
                DeveloperRow(1, 1, "alice", "+15550000101"),
                DeveloperRow(2, 1, "bob", "+15550000102"),
            ),
            schedules=(ScheduleRow("daily", DAILY, notify_handover=True, managed=False),),
        )
    )
    directory = await Directory.load(store)
    clock = DrivenClock()
    recorded = Recorder()
    try:
        async with asyncio.TaskGroup() as group:
            handovers = Handovers(
                directory=directory,
                clock=clock,
                publisher=recorded,
                store=store,
                outbox=recorded,
                spawner=group,
            )
            book = ScheduleBook(store, directory, changed=handovers.changed)
            yield World(store, directory, book, clock, recorded, handovers)
            handovers.stop()
    finally:
        directory.close()
        await store.close()


async def test_start_up_announces_who_is_on_call_until_someone_else_is(world: World) -> None:
    world.handovers.start()
    assert world.announced() == [("daily", OnCallNow(1, "alice", HANDOVER))]
    assert world.clock.armed() == [HANDOVER]
    await asyncio.sleep(0.1)
    assert world.recorded.pages == []  # no SMS for a turn that began before the start


async def test_each_handover_is_announced_and_texted_to_the_new_developer(world: World) -> None:
    world.handovers.start()
    world.clock.advance(30 * 60)
    assert await world.pages(1) == [2]
    day_after = HANDOVER + timedelta(days=1)
    assert world.announced()[-1] == ("daily", OnCallNow(2, "bob", day_after))
    assert world.clock.armed() == [day_after]
    [notice] = world.recorded.pages
    assert (notice.recipient, notice.developer_id, notice.is_notice) == ("+15550000102", 2, True)
    assert notice.message == (
        "pagerd: you are on call (daily) from Sun 22 Nov 10:30 until Mon 23 Nov 10:30 UTC"
    )
    stored = await world.store.pending_outbox(10)
    assert [row.id for row in stored] == [notice.id]


async def test_an_override_is_a_handover_and_so_is_its_end(world: World) -> None:
    world.handovers.start()
    await world.book.add_override("daily", 2, T0 + timedelta(minutes=5), T0 + timedelta(minutes=15))
    assert world.announced()[-1] == ("daily", OnCallNow(1, "alice", T0 + timedelta(minutes=5)))
    world.clock.advance(5 * 60)
    assert world.announced()[-1] == ("daily", OnCallNow(2, "bob", T0 + timedelta(minutes=15)))
    world.clock.advance(10 * 60)
    assert world.announced()[-1] == ("daily", OnCallNow(1, "alice", HANDOVER))
    assert await world.pages(2) == [2, 1]


async def test_nothing_is_announced_when_the_developer_stays_the_same(world: World) -> None:
    """An override for the developer already on call changes no one: no announcement."""
    world.handovers.start()
    await world.book.add_override("daily", 1, T0 + timedelta(minutes=5), T0 + timedelta(minutes=15))
    world.clock.advance(15 * 60)
    await asyncio.sleep(0.1)
    assert world.announced() == [("daily", OnCallNow(1, "alice", HANDOVER))]
    assert world.recorded.pages == []


async def test_a_deleted_schedule_clears_its_announcement(world: World) -> None:
    world.handovers.start()
    await world.book.delete("daily")
    assert world.announced()[-1] == ("daily", None)
    assert world.clock.armed() == []


def test_a_stretch_runs_across_turns_of_the_same_developer() -> None:
    alone = Schedule(1, "UTC", (Rotation(datetime(2026, 1, 1), 3600, (1, 1, 2)),))
    rota = Rota("s", alone, Overrides(), {1: "+1", 2: "+2"})
    current = stretch(rota, datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    assert (current.developer_id, current.until) == (1, datetime(2026, 1, 1, 2, tzinfo=UTC))
    forever = Rota(
        "s", Schedule(1, "UTC", ()), Overrides((Override(1, 2, T0, T0 + timedelta(hours=1)),)), {}
    )
    assert stretch(forever, T0 + timedelta(hours=2)).until is None


def test_a_notice_reads_in_the_schedules_own_time() -> None:
    text = notice_text("week", "Europe/Paris", datetime(2026, 3, 30, 7, tzinfo=UTC), None)
    assert text == "pagerd: you are on call (week) from Mon 30 Mar 09:00 Europe/Paris"
    assert len(notice_text("w" * 128, "America/Argentina/ComodRivadavia", T0, T0)) > 160
