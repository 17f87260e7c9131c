"""What SQLite's migration 5 and PostgreSQL's 2 keep (pagerd.store): schedules, overrides,
heartbeats, maintenance windows, suppressed alerts and a service's alerts, each test
against a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import pytest

from pagerd.core.domain import Incident, Maintenance, RecordAlert, ServiceState
from pagerd.core.policy import Level, Policy, SmsTarget
from pagerd.core.records import (
    DeveloperRow,
    OverrideRow,
    PolicyRow,
    ScheduleRow,
    ServiceRow,
    StoreError,
    TeamRow,
    WatchRow,
    WriteBatch,
)
from pagerd.core.schedules import Override, Rotation, Schedule
from pagerd.store.migrations import MIGRATIONS
from pagerd.store.postgres import PostgresStore
from pagerd.store.sqlite import Store as SqliteStore
from pagerd.store.sqlite import migrate
from tests.postgres import StoreLocation
from tests.test_store import fetch

Store = SqliteStore | PostgresStore

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
WEEK_S = 7 * 24 * 3600
TEAM = TeamRow(1, "claims", managed=False, cursor=0)
DEVELOPERS = tuple(DeveloperRow(i, 1, f"dev{i}", f"+1555000000{i}") for i in (1, 2, 3))
WEEKLY = Schedule(
    1,
    "Europe/Paris",
    (
        Rotation(datetime(2026, 3, 2, 9), WEEK_S, (1, 2, 3)),
        Rotation(datetime(2026, 6, 1, 9), 24 * 3600, (3,)),
    ),
)
POLICY = Policy("p", (Level((SmsTarget("+15550009999"),), 300),))


@pytest.fixture
async def store(store_location: StoreLocation) -> AsyncIterator[Store]:
    opened = await store_location.open()
    assert isinstance(opened, SqliteStore | PostgresStore)
    await opened.write(WriteBatch(teams=(TEAM,), developers=DEVELOPERS))
    yield opened
    await opened.close()


async def reopen(store: Store, location: StoreLocation) -> Store:
    """The store closed, and opened again on the same database."""
    await store.close()
    reopened = await location.open()
    assert isinstance(reopened, SqliteStore | PostgresStore)
    return reopened


def override(override_id: int, developer_id: int = 3, hours: int = 2) -> Override:
    return Override(override_id, developer_id, T0, T0 + timedelta(hours=hours))


async def test_a_schedule_round_trips_with_its_layers_in_order(store: Store) -> None:
    row = ScheduleRow("week", WEEKLY, notify_handover=True, managed=False)
    await store.write(WriteBatch(schedules=(row,)))
    assert await store.load_schedules() == [row]


async def test_a_schedule_put_again_replaces_its_rotations(store: Store) -> None:
    await store.write(WriteBatch(schedules=(ScheduleRow("week", WEEKLY, False, False),)))
    fewer = Schedule(1, "UTC", (Rotation(datetime(2026, 1, 1), 3600, (2,)),))
    await store.write(WriteBatch(schedules=(ScheduleRow("week", fewer, False, True),)))
    assert await store.load_schedules() == [ScheduleRow("week", fewer, False, True)]


async def test_two_writes_of_one_schedule_in_one_round_leave_the_later(store: Store) -> None:
    """A schedule's rotations are a delete and inserts: the second write of the same
    schedule waits for the next round instead of inserting beside the first."""
    other = Schedule(1, "UTC", (Rotation(datetime(2026, 1, 1), 3600, (2,)),))
    first = store.write(WriteBatch(schedules=(ScheduleRow("week", WEEKLY, False, False),)))
    second = store.write(WriteBatch(schedules=(ScheduleRow("week", other, False, False),)))
    await asyncio.gather(first, second)
    assert await store.load_schedules() == [ScheduleRow("week", other, False, False)]


async def test_overrides_round_trip_and_go_with_their_schedule(store: Store) -> None:
    await store.write(WriteBatch(schedules=(ScheduleRow("week", WEEKLY, False, False),)))
    await store.write(
        WriteBatch(overrides=(OverrideRow("week", override(1)), OverrideRow("week", override(2))))
    )
    await store.write(WriteBatch(overrides_deleted=(("week", 1),)))
    assert await store.load_overrides() == [OverrideRow("week", override(2))]

    await store.write(WriteBatch(schedules_deleted=("week",)))
    assert await store.load_schedules() == []
    assert await store.load_overrides() == []
    assert await fetch(store, "SELECT count(*) FROM schedule_rotations") == [(0,)]


async def test_override_ids_are_never_handed_out_twice(
    store: Store, store_location: StoreLocation
) -> None:
    """The highest id stays known after its override is deleted, and after a restart: a
    retried DELETE of an old id never removes a newer override."""
    await store.write(WriteBatch(schedules=(ScheduleRow("week", WEEKLY, False, False),)))
    assert await store.last_override_id() == 0
    await store.write(WriteBatch(overrides=(OverrideRow("week", override(7)),)))
    await store.write(WriteBatch(overrides_deleted=(("week", 7),)))
    assert await store.last_override_id() == 7
    reopened = await reopen(store, store_location)
    try:
        assert await reopened.last_override_id() == 7
    finally:
        await reopened.close()


async def test_an_override_of_a_schedule_that_does_not_exist_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match=r"(?i)foreign key"):
        await store.write(WriteBatch(overrides=(OverrideRow("nope", override(1)),)))


async def test_a_schedule_whose_zone_this_host_lacks_is_unreadable(
    store: Store, store_location: StoreLocation
) -> None:
    await store.write(WriteBatch(schedules=(ScheduleRow("week", WEEKLY, False, False),)))
    if isinstance(store, SqliteStore):
        raw = sqlite3.connect(store_location.path)
        with raw:
            raw.execute("UPDATE schedules SET time_zone = 'Mars/Olympus_Mons'")
        raw.close()
    else:
        admin = await asyncpg.connect(store_location.url)
        try:
            await admin.execute("UPDATE schedules SET time_zone = 'Mars/Olympus_Mons'")
        finally:
            await admin.close()
    with pytest.raises(StoreError, match="stored schedule 'week' is unreadable"):
        await store.load_schedules()


async def test_heartbeats_and_maintenance_are_what_start_up_watches(store: Store) -> None:
    window = Maintenance(T0 + timedelta(hours=1), "deploy")
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=False),),
            services=(
                ServiceRow("quiet", "quiet", "p", managed=False),
                ServiceRow("cron", "cron", "p", managed=False, heartbeat_s=1.5),
                ServiceRow("deploying", "deploying", "p", managed=False),
            ),
        )
    )
    await store.write(WriteBatch(maintenance=(("deploying", window),)))
    chunk = await anext(aiter(store.services_listing()))
    listed = {s["id"]: s for s in msgspec.json.decode(b"[" + chunk + b"]")}
    assert (listed["cron"]["heartbeat_s"], listed["cron"]["maintenance"]) == (1.5, None)
    assert listed["deploying"]["maintenance"] == {
        "until": "2026-11-22T11:00:00.000Z",
        "reason": "deploy",
    }
    assert listed["quiet"]["heartbeat_s"] is None
    watches = sorted(await store.read_watches(), key=lambda w: w.service_id)
    assert watches == [
        WatchRow("cron", 1.5, None),
        WatchRow("deploying", None, window),
    ]
    await store.write(WriteBatch(maintenance=(("deploying", None),)))
    assert [w.service_id for w in await store.read_watches()] == ["cron"]
    reader = await store.service_reader()
    try:
        assert reader.get("cron") == ServiceRow("cron", "cron", "p", False, heartbeat_s=1.5)
    finally:
        reader.close()


async def test_suppressed_alerts_are_kept_on_no_incident_each_one(store: Store) -> None:
    """Alerts during a window have no incident: none is de-duplicated away, whatever its id."""
    alerts = tuple(
        ("cron", RecordAlert(None, f"down {n}", "same-id", "nagios", T0 + timedelta(seconds=n)))
        for n in range(3)
    )
    await store.write(WriteBatch(alerts=alerts))
    rows = await store.service_alerts("cron", limit=10)
    assert [(r.message, r.incident_id) for r in rows] == [
        ("down 2", None),
        ("down 1", None),
        ("down 0", None),
    ]


async def test_a_services_alerts_are_paged_newest_first(store: Store) -> None:
    await store.write(
        WriteBatch(
            incidents=(("cron", Incident("inc-1", "down", T0)),),
            alerts=(
                *(
                    ("cron", RecordAlert("inc-1", f"a{n}", None, None, T0 + timedelta(seconds=n)))
                    for n in range(5)
                ),
                ("other", RecordAlert(None, "elsewhere", None, None, T0)),
            ),
        )
    )
    first = await store.service_alerts("cron", limit=2)
    second = await store.service_alerts("cron", limit=2, before=first[-1].seq)
    third = await store.service_alerts("cron", limit=2, before=second[-1].seq)
    assert [[r.message for r in page] for page in (first, second, third)] == [
        ["a4", "a3"],
        ["a2", "a1"],
        ["a0"],
    ]
    assert first[0].at == T0 + timedelta(seconds=4)


async def test_an_incident_remembers_the_alert_id_that_opened_it(store: Store) -> None:
    opened = Incident("inc-1", "no heartbeat for 30 s", T0, opened_by="heartbeat")
    await store.write(
        WriteBatch(
            incidents=(("cron", opened),),
            alerts=(("cron", RecordAlert("inc-1", opened.message, "heartbeat", None, T0)),),
        )
    )
    states: list[ServiceState] = []
    await store.read_open_states(states.extend)
    [state] = states
    assert state.incident is not None
    assert state.incident.opened_by == "heartbeat"
    found = await store.get_incident("inc-1")
    assert found is not None
    assert found[1].opened_by == "heartbeat"


async def test_migration_5_keeps_the_alerts_of_a_version_4_sqlite_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:4], start=1):
        raw.executescript(f"BEGIN; {script}; PRAGMA user_version = {version}; COMMIT;")
    raw.execute(
        "INSERT INTO alerts (incident_id, service_id, alert_id, message, source, at)"
        " VALUES ('inc-1', 'api', 'a-1', 'down', 'nagios', '2026-11-22T10:00:00.000000Z')"
    )
    raw.execute("INSERT INTO services (id, name, policy_id, managed) VALUES ('api', 'API', 'p', 0)")
    raw.close()

    store = await SqliteStore.open(path)
    try:
        [row] = await store.service_alerts("api", limit=10)
        assert (row.incident_id, row.alert_id, row.message, row.source) == (
            "inc-1",
            "a-1",
            "down",
            "nagios",
        )
        assert await store.read_watches() == []
        # The unique index came along: the same alert id on the same incident is kept once.
        again = RecordAlert("inc-1", "down", "a-1", "nagios", T0)
        await store.write(WriteBatch(alerts=(("api", again),)))
        assert len(await store.service_alerts("api", limit=10)) == 1
    finally:
        await store.close()


async def test_migrate_from_version_4_runs_once(tmp_path: Path) -> None:
    import aiosqlite

    async with aiosqlite.connect(tmp_path / "x.db", isolation_level=None) as db:
        assert await migrate(db, MIGRATIONS[:4]) == 4
        assert await migrate(db) == len(MIGRATIONS) - 4
        assert await migrate(db) == 0
