"""The durable stores (pagerd.store): each test that is not about one store's own
settings runs against a real SQLite file in tmp_path and a real PostgreSQL database.

Round trips of every row type, durability settings, migrations, and group
commit: many writers share one transaction, a bad unit fails alone, a broken
database fails its round and the writer goes on. PostgreSQL's own settings,
migrations and failures are in test_store_postgres.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pagerd.core.domain import (
    MAX_REMEMBERED_ALERT_IDS,
    Incident,
    IncidentStatus,
    RecordAlert,
    RecordTimeline,
    ServiceState,
)
from pagerd.core.policy import EmailTarget, Level, Policy, SmsTarget, TeamTarget, WebhookTarget
from pagerd.core.records import (
    DeadLetter,
    DeveloperRow,
    OutboxRow,
    OutboxUpdate,
    PolicyRow,
    ServiceRow,
    StoreError,
    TeamRow,
    WriteBatch,
)
from pagerd.store.migrations import MIGRATIONS, SCHEMA_VERSION
from pagerd.store.postgres import PostgresStore
from pagerd.store.sqlite import Store as SqliteStore
from pagerd.store.sqlite import migrate
from tests.postgres import StoreLocation

Store = SqliteStore | PostgresStore

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SERVICE = "payments-api"

POLICY = Policy(
    "payments",
    (
        Level((SmsTarget("+15550001111"), EmailTarget("oncall@example.com")), 900),
        Level((TeamTarget("claims"), WebhookTarget("https://chat.example.com/hook")), 0.3),
    ),
    repeat=2,
)


@pytest.fixture
async def store(store_location: StoreLocation) -> AsyncIterator[Store]:
    opened = await store_location.open()
    assert isinstance(opened, SqliteStore | PostgresStore)
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "state" / "pagerd.db")
    yield opened
    await opened.close()


async def fetch(store: Store, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) on the store's reader."""
    if isinstance(store, SqliteStore):
        return [tuple(row) for row in await store._fetch(sql, params)]
    numbered = sql.split("?")
    sql = numbered[0] + "".join(f"${n}{part}" for n, part in enumerate(numbered[1:], 1))
    return [tuple(row) for row in await store._fetch(sql, *params)]


async def all_services(store: Store) -> list[ServiceRow]:
    """Every stored service, by id, read as the directory's reader reads each."""
    ids = [row[0] for row in await fetch(store, "SELECT id FROM services ORDER BY id")]
    reader = await store.service_reader()
    try:
        return [row for row in map(reader.get, ids) if row is not None]
    finally:
        reader.close()


async def load_open_states(store: Store) -> list[ServiceState]:
    """The state of every service with an open incident, as start-up reads them."""
    states: list[ServiceState] = []
    await store.read_open_states(states.extend)
    return states


async def open_incidents(store: Store) -> list[tuple[str, Incident]]:
    """(service_id, incident) of every open incident, as start-up reads them."""
    return [(s.service_id, s.incident) for s in await load_open_states(store) if s.incident]


async def count_alerts(
    store: Store, *, service_id: str | None = None, incident_id: str | None = None
) -> int:
    """How many alerts are stored, optionally of one service and/or one incident."""
    rows = await fetch(
        store,
        "SELECT count(*) FROM alerts WHERE coalesce(?, service_id) = service_id"
        " AND coalesce(?, incident_id) = incident_id",
        service_id,
        incident_id,
    )
    return int(rows[0][0])


def incident(incident_id: str = "inc-1", **changes: Any) -> Incident:
    return Incident(**{"id": incident_id, "message": "Too many 5xx!", "opened_at": T0, **changes})


def alert(
    incident_id: str = "inc-1", alert_id: str | None = None, at: datetime = T0
) -> RecordAlert:
    return RecordAlert(incident_id, "Too many 5xx!", alert_id, "prometheus", at)


def outbox(notification_id: str, incident_id: str = "inc-1", **changes: Any) -> OutboxRow:
    fields: dict[str, Any] = {
        "id": notification_id,
        "incident_id": incident_id,
        "service_id": SERVICE,
        "channel": "sms",
        "recipient": "+15550001111",
        "level": 1,
        "step": 0,
        "message": "Too many 5xx!",
        "created_at": T0,
    }
    return OutboxRow(**{**fields, **changes})


def opened(incident_id: str, service_id: str = SERVICE, at: datetime = T0) -> WriteBatch:
    """What an alert that opens an incident commits."""
    return WriteBatch(
        incidents=((service_id, incident(incident_id, opened_at=at)),),
        alerts=((service_id, alert(incident_id, at=at)),),
    )


# --- round trips -------------------------------------------------------------------------


async def test_every_row_type_round_trips(store: Store) -> None:
    team = TeamRow(7, "claims", managed=True, cursor=3)
    developers = (
        DeveloperRow(1, 7, "someone", "999999999"),
        DeveloperRow(2, 7, "another", "+15550002222"),
    )
    service = ServiceRow(SERVICE, "Payments API", "payments", managed=True)
    api_service = ServiceRow("team-7", "team-7", "payments", managed=False)
    row = outbox(
        "inc-1-0-0",
        developer_id=1,
        status="failed",
        attempts=4,
        next_attempt_at=T0 + timedelta(seconds=30),
        last_error="HTTP 503",
    )
    await store.write(
        WriteBatch(
            services=(service, api_service),
            policies=(PolicyRow(POLICY, managed=True),),
            teams=(team,),
            developers=developers,
            incidents=((SERVICE, incident()),),
            alerts=((SERVICE, alert(alert_id="a-1")),),
            timeline=((SERVICE, RecordTimeline("inc-1", "incident.triggered", T0, {"level": 1})),),
            outbox=(row,),
            meta=(("ack_secret", "s3cret"),),
            dead_letters=(DeadLetter(T0, "mqtt", "pagerd/alert/x", "{", "internal error"),),
        )
    )
    later = DeadLetter(T0 + timedelta(seconds=1), "mqtt", "pagerd/ack/x", "", "no policy")
    await store.write(WriteBatch(dead_letters=(later,)))

    assert await all_services(store) == [service, api_service]
    assert await store.load_policies() == [PolicyRow(POLICY, managed=True)]
    assert await store.load_teams() == [team]
    assert await store.load_developers() == list(developers)
    assert await store.notifications("inc-1") == [row]
    assert await store.timeline("inc-1") == [(T0, "incident.triggered", {"level": 1})]
    assert await store.get_meta("ack_secret") == "s3cret"
    assert await store.get_meta("missing") is None
    assert [d.reason for d in await store.dead_letters(10)] == ["no policy", "internal error"]
    assert await store.dead_letters(1) == [later]
    assert await count_alerts(store, service_id=SERVICE) == 1


async def test_upserts_replace_and_deletes_remove(store: Store) -> None:
    await store.write(
        WriteBatch(
            services=(ServiceRow("a", "A", "payments", managed=False),),
            policies=(PolicyRow(POLICY, managed=False),),
            teams=(TeamRow(1, "claims", managed=False, cursor=0),),
            meta=(("k", "v1"),),
        )
    )
    edited = Policy("payments", (Level((SmsTarget("+15550009999"),), 60),))
    await store.write(
        WriteBatch(
            services=(ServiceRow("a", "A renamed", "other", managed=True),),
            policies=(PolicyRow(edited, managed=True),),
            team_cursors=((1, 5),),
            meta=(("k", "v2"),),
        )
    )
    assert await all_services(store) == [ServiceRow("a", "A renamed", "other", managed=True)]
    assert await store.load_policies() == [PolicyRow(edited, managed=True)]
    assert await store.load_teams() == [TeamRow(1, "claims", managed=False, cursor=5)]
    assert await store.get_meta("k") == "v2"

    await store.write(WriteBatch(policies_deleted=("payments",)))
    assert await store.load_policies() == []


@pytest.mark.parametrize(
    "stored",
    [
        incident("inc-t", level_index=1, round=1, step=3, ack_deadline=T0 + timedelta(seconds=0.3)),
        incident(
            "inc-a",
            status=IncidentStatus.ACKNOWLEDGED,
            step=1,
            acknowledged_at=T0 + timedelta(minutes=2),
            acknowledged_by="alice",
            alert_count=4,
        ),
        incident(
            "inc-r",
            status=IncidentStatus.RESOLVED,
            acknowledged_at=T0 + timedelta(minutes=2),
            resolved_at=T0 + timedelta(minutes=9, microseconds=1),
        ),
    ],
    ids=lambda i: str(i.status),
)
async def test_incident_round_trips_in_each_status(store: Store, stored: Incident) -> None:
    await store.write(WriteBatch(incidents=(("svc", stored),)))
    assert await store.get_incident(stored.id) == ("svc", stored)
    assert await store.get_incident("no-such-incident") is None


async def test_times_are_fixed_width_utc_text(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    store = sqlite_store
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 22, 11, 0, tzinfo=paris)  # 10:00 UTC, no microseconds
    await store.write(WriteBatch(incidents=(("svc", incident(opened_at=at)),)))

    with sqlite3.connect(tmp_path / "state" / "pagerd.db") as raw:
        (text,) = raw.execute("SELECT opened_at FROM incidents").fetchone()
    assert text == "2026-11-22T10:00:00.000000Z"
    found = await store.get_incident("inc-1")
    assert found is not None
    assert found[1].opened_at == at
    assert found[1].opened_at.utcoffset() == timedelta(0)


async def test_a_naive_datetime_is_refused_before_it_is_queued(store: Store) -> None:
    naive = datetime(2026, 11, 22, 10, 0)  # no tzinfo: the point of the test
    with pytest.raises(StoreError, match="naive"):
        await store.write(WriteBatch(incidents=(("svc", incident(opened_at=naive)),)))
    assert await store.list_incidents() == []


# --- durability settings, persistence, migrations ----------------------------------------


async def test_wal_synchronous_full_and_foreign_keys_are_set(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    store = sqlite_store
    with sqlite3.connect(tmp_path / "state" / "pagerd.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # synchronous and foreign_keys belong to a connection: ask the store's writer.
    writer = store._db
    async with writer.execute("PRAGMA synchronous") as cursor:
        assert await cursor.fetchone() == (2,)  # FULL
    async with writer.execute("PRAGMA foreign_keys") as cursor:
        assert await cursor.fetchone() == (1,)


async def test_everything_survives_close_and_reopen(store_location: StoreLocation) -> None:
    first = await store_location.open()
    await first.write(opened("inc-1"))
    await first.write(WriteBatch(outbox=(outbox("inc-1-0-0"),), meta=(("secret", "x"),)))
    await first.close()

    second = await store_location.open()
    assert isinstance(second, SqliteStore | PostgresStore)
    try:
        assert [i.id for _, i in await open_incidents(second)] == ["inc-1"]
        assert [row.id for row in await second.pending_outbox(10)] == ["inc-1-0-0"]
        assert await second.get_meta("secret") == "x"
        assert await count_alerts(second, incident_id="inc-1") == 1
    finally:
        await second.close()


async def test_migrations_run_once_and_only_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "pagerd.db"
    await (await SqliteStore.open(path)).close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)

    store = await SqliteStore.open(path)  # opening an up-to-date database runs nothing
    try:
        assert await migrate(store._db) == 0
        added = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER);")
        assert await migrate(store._db, added) == 1
        assert await migrate(store._db, added) == 0
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert raw.execute("SELECT count(*) FROM extra").fetchone() == (0,)


async def test_a_failed_migration_leaves_the_previous_version(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    broken = (*MIGRATIONS, "CREATE TABLE half (x INTEGER); CREATE TABLE half (y INTEGER);")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await migrate(store._db, broken)
    async with store._db.execute("PRAGMA user_version") as cursor:
        assert await cursor.fetchone() == (SCHEMA_VERSION,)
    async with store._db.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'half'") as c:
        assert await c.fetchone() == (0,)


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pagerd.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this pagerd"):
        await SqliteStore.open(path)


# --- group commit ------------------------------------------------------------------------


async def test_concurrent_writes_share_commits(store: Store) -> None:
    commits: list[int] = []
    store.on_commit(lambda units, seconds: commits.append(units))

    await asyncio.gather(*(store.write(opened(f"inc-{n}", f"svc-{n}")) for n in range(500)))

    assert sum(commits) == 500
    assert len(commits) <= 5, commits
    assert await count_alerts(store) == 500
    assert len(await open_incidents(store)) == 500


async def test_a_bad_unit_fails_alone_and_the_rest_of_its_round_commits(store: Store) -> None:
    await store.write(WriteBatch(teams=(TeamRow(1, "claims", managed=False, cursor=0),)))
    good = [opened(f"inc-{n}", f"svc-{n}") for n in range(20)]
    orphan = WriteBatch(developers=(DeveloperRow(9, 42, "nobody", "+1"),))  # no team 42
    taken = WriteBatch(teams=(TeamRow(2, "claims", managed=False, cursor=0),))  # name in use

    results = await asyncio.gather(
        *(store.write(b) for b in [*good[:10], orphan, *good[10:], taken]),
        return_exceptions=True,
    )

    errors = {i: r for i, r in enumerate(results) if r is not None}
    assert set(errors) == {10, 21}, results
    assert isinstance(errors[10], StoreError)
    assert "developers" in str(errors[10])
    assert "foreign key" in str(errors[10]).lower()
    assert isinstance(errors[21], StoreError)
    assert "unique" in str(errors[21]).lower()
    assert await count_alerts(store) == 20
    assert await store.load_developers() == []
    assert [t.name for t in await store.load_teams()] == ["claims"]


async def test_a_database_failure_fails_its_round_and_the_writer_goes_on(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
    # A page limit at the current size is a real SQLITE_FULL ("database or disk is full").
    async with store._db.execute("PRAGMA page_count") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    await store._db.execute(f"PRAGMA max_page_count = {row[0]}")
    big = "x" * 4000
    units = [
        WriteBatch(timeline=(("svc", RecordTimeline(f"inc-{n}", "note", T0, {"pad": big})),))
        for n in range(50)
    ]

    results = await asyncio.gather(*(store.write(u) for u in units), return_exceptions=True)

    assert all(isinstance(r, StoreError) for r in results), results
    assert "full" in str(results[0])
    await store._db.execute("PRAGMA max_page_count = 1073741823")
    await store.write(opened("inc-after"))
    assert await count_alerts(store) == 1
    assert await store.timeline("inc-0") == []


async def test_a_cancelled_waiter_does_not_break_the_writer(store: Store) -> None:
    waiter = asyncio.create_task(store.write(opened("inc-cancelled")))
    await asyncio.sleep(0)  # one step: it has queued its unit
    waiter.cancel()
    await store.write(opened("inc-next"))
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # Cancelling stops the wait, not the write: the queued unit was committed.
    assert await store.get_incident("inc-cancelled") is not None
    assert await store.get_incident("inc-next") is not None


async def test_a_later_upsert_of_a_key_deleted_earlier_in_the_round_wins(store: Store) -> None:
    await store.write(WriteBatch(policies=(PolicyRow(POLICY, managed=False),)))
    recreated = PolicyRow(POLICY, managed=True)

    await asyncio.gather(
        store.write(WriteBatch(policies_deleted=(POLICY.id,))),
        store.write(WriteBatch(policies=(recreated,))),
    )
    assert await store.load_policies() == [recreated]

    await store.write(WriteBatch(outbox=(outbox("n-1"),)))
    sent = OutboxUpdate("n-1", "sent", 1, None, None)
    await asyncio.gather(
        store.write(WriteBatch(outbox_updates=(sent,))),
        store.write(WriteBatch(outbox=(outbox("n-1"),))),  # a replay: ignored, not a reset
    )
    assert [(r.status, r.attempts) for r in await store.notifications("inc-1")] == [("sent", 1)]


async def test_close_commits_what_is_queued(store_location: StoreLocation) -> None:
    store = await store_location.open()
    writers = [asyncio.create_task(store.write(opened(f"inc-{n}"))) for n in range(50)]
    await asyncio.sleep(0)  # one step each: every writer has queued its unit
    async with asyncio.timeout(10):
        await store.close()
        await asyncio.gather(*writers)  # all committed, none failed
    with pytest.raises(StoreError, match="closed"):
        await store.write(opened("inc-late"))

    reopened = await store_location.open()
    assert isinstance(reopened, SqliteStore | PostgresStore)
    try:
        assert await count_alerts(reopened) == 50
    finally:
        await reopened.close()


# --- alerts and the outbox ---------------------------------------------------------------


async def test_a_repeated_alert_id_is_stored_once_per_incident(store: Store) -> None:
    await store.write(opened("inc-1"))
    repeated = WriteBatch(alerts=((SERVICE, alert("inc-1", "dedup-1")),))
    await store.write(repeated)
    await asyncio.gather(store.write(repeated), store.write(repeated))  # also within a round
    anonymous = WriteBatch(alerts=((SERVICE, alert("inc-1", None)),))
    await store.write(anonymous)
    await store.write(WriteBatch(alerts=((SERVICE, alert("inc-2", "dedup-1")),)))

    # opened() stored one anonymous alert; NULL alert_ids never collide.
    assert await count_alerts(store, incident_id="inc-1") == 3
    assert await count_alerts(store, incident_id="inc-2") == 1
    assert await count_alerts(store, service_id=SERVICE, incident_id="inc-1") == 3
    assert await count_alerts(store, service_id="other") == 0


async def test_an_outbox_row_is_inserted_once(store: Store) -> None:
    first = outbox("inc-1-0-0")
    await store.write(WriteBatch(outbox=(first,)))
    replay = outbox("inc-1-0-0", recipient="+19990000000", created_at=T0 + timedelta(hours=1))
    await store.write(WriteBatch(outbox=(replay,)))
    assert await store.notifications("inc-1") == [first]


async def test_outbox_updates_and_pending_oldest_first(store: Store) -> None:
    rows = [
        outbox("n-late", created_at=T0 + timedelta(seconds=2)),
        outbox("n-early", created_at=T0),
        outbox("n-middle", created_at=T0 + timedelta(seconds=1)),
    ]
    await store.write(WriteBatch(outbox=tuple(rows)))
    retry_at = T0 + timedelta(seconds=5)
    await store.write(
        WriteBatch(
            outbox_updates=(
                OutboxUpdate("n-early", "sent", 1, None, None),
                OutboxUpdate("n-late", "pending", 2, retry_at, "HTTP 503"),
            )
        )
    )

    pending = await store.pending_outbox(10)
    assert [r.id for r in pending] == ["n-middle", "n-late"]
    assert (pending[1].attempts, pending[1].next_attempt_at, pending[1].last_error) == (
        2,
        retry_at,
        "HTTP 503",
    )
    assert [r.id for r in await store.pending_outbox(1)] == ["n-middle"]
    assert [r.id for r in await store.notifications("inc-1")] == ["n-early", "n-middle", "n-late"]


# --- incidents ---------------------------------------------------------------------------


async def test_open_incidents_rebuild_alert_ids(store: Store) -> None:
    resolved = incident("inc-old", status=IncidentStatus.RESOLVED, resolved_at=T0)
    acked = incident("inc-b", status=IncidentStatus.ACKNOWLEDGED, acknowledged_at=T0)
    await store.write(
        WriteBatch(
            incidents=(("old", resolved), ("a", incident("inc-a")), ("b", acked)),
            alerts=(
                ("a", alert("inc-a", "x")),
                ("a", alert("inc-a", "y")),
                ("a", alert("inc-a", None)),
                ("old", alert("inc-old", "z")),
            ),
        )
    )

    loaded = dict(await open_incidents(store))
    assert set(loaded) == {"a", "b"}
    assert set(loaded["a"].alert_ids) == {"x", "y"}
    assert not loaded["b"].alert_ids
    assert loaded["b"].status is IncidentStatus.ACKNOWLEDGED
    old = await store.get_incident("inc-old")
    assert old is not None
    assert set(old[1].alert_ids) == {"z"}


async def test_list_incidents_newest_first_with_filters(store: Store) -> None:
    await store.write(
        WriteBatch(
            incidents=(
                ("a", incident("i1", opened_at=T0)),
                ("b", incident("i2", opened_at=T0 + timedelta(minutes=1))),
                (
                    "a",
                    incident(
                        "i3",
                        opened_at=T0 + timedelta(minutes=2),
                        status=IncidentStatus.RESOLVED,
                        resolved_at=T0 + timedelta(minutes=3),
                    ),
                ),
                ("a", incident("i4", opened_at=T0 + timedelta(minutes=3))),
            )
        )
    )

    async def ids(**filters: Any) -> list[str]:
        found = await store.list_incidents(**filters)
        return [row.incident.id for row in found]

    assert await ids() == ["i4", "i3", "i2", "i1"]
    assert await ids(limit=2) == ["i4", "i3"]
    assert await ids(service_id="a") == ["i4", "i3", "i1"]
    assert await ids(status="triggered") == ["i4", "i2", "i1"]
    assert await ids(service_id="a", status="resolved") == ["i3"]
    assert await ids(service_id="nobody") == []
    assert await ids(status="open") == ["i4", "i2", "i1"]
    assert await ids(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [
        "i3",
        "i2",
    ]
    [found] = await store.list_incidents(service_id="b", status=None, limit=10)
    assert (found.service_id, found.incident) == (
        "b",
        incident("i2", opened_at=T0 + timedelta(minutes=1)),
    )


@pytest.mark.parametrize("status", [None, "open", "triggered", "resolved"])
async def test_incidents_page_after_page_by_their_key_ties_included(
    store: Store, status: str | None
) -> None:
    """Given 23 incidents, some opened at the very same instant, when read five at a time,
    each page starting after the key (opened_at, seq) of the one before, then every
    incident in the status comes once, newest first, ties newest written first."""
    rows = []
    for n in range(23):
        at = T0 + timedelta(seconds=n // 3)  # three at each instant
        done = n % 4 == 0
        changes: dict[str, Any] = (
            {"status": IncidentStatus.RESOLVED, "resolved_at": at} if done else {}
        )
        rows.append((f"svc-{n % 5}", incident(f"i{n:02d}", opened_at=at, **changes)))
    for row in rows:  # one write each: seq in this order
        await store.write(WriteBatch(incidents=(row,)))
    wanted = [
        i.id
        for _, i in reversed(rows)
        if status is None
        or (status == "open" and i.status is not IncidentStatus.RESOLVED)
        or i.status.value == status
    ]

    seen: list[str] = []
    before = None
    while True:
        page = await store.list_incidents(status=status, limit=5, before=before)
        seen += [row.incident.id for row in page]
        if len(page) < 5:
            break
        before = (page[-1].incident.opened_at, page[-1].seq)
    assert seen == wanted


async def test_alerts_of_a_service_and_of_an_incident_page_newest_first(store: Store) -> None:
    """Given two incidents of a service with alerts interleaved with another service's,
    when read three at a time, then each listing gives its own alerts newest first, each
    page starting after the last one's seq, with source, alert id and incident."""
    await store.write(opened("i1", "a"))
    await store.write(opened("i9", "b"))
    for n in range(6):
        at = T0 + timedelta(seconds=n + 1)
        await store.write(WriteBatch(alerts=(("a", alert("i1", f"a-{n}", at)),)))
        await store.write(WriteBatch(alerts=(("b", alert("i9", f"b-{n}", at)),)))
    await store.write(opened("i2", "a", at=T0 + timedelta(minutes=1)))

    async def every(read: Any, key: str) -> list[tuple[str | None, str | None]]:
        found: list[tuple[str | None, str | None]] = []
        before = None
        while True:
            page = await read(key, limit=3, before=before)
            found += [(row.alert_id, row.incident_id) for row in page]
            if len(page) < 3:
                return found
            before = page[-1].seq

    named = [(f"a-{n}", "i1") for n in reversed(range(6))]
    assert await every(store.service_alerts, "a") == [(None, "i2"), *named, (None, "i1")]
    assert await every(store.incident_alerts, "i1") == [*named, (None, "i1")]
    assert await every(store.incident_alerts, "i2") == [(None, "i2")]
    assert await every(store.incident_alerts, "nothing") == []
    [newest] = await store.incident_alerts("i1", limit=1)
    assert (newest.at, newest.message, newest.source) == (
        T0 + timedelta(seconds=6),
        "Too many 5xx!",
        "prometheus",
    )


async def test_services_page_by_health_and_text(store: Store) -> None:
    """Given services healthy and not (one with two open incidents, one with a resolved
    one), when paged two at a time per health, with and without a search, then each
    comes once in id order, with its latest open incident, matching id or name in any
    case, and LIKE's wildcards are searched as text."""
    names = {
        "api": "Payments API",
        "billing": "Billing",
        "cache_1": "Cache",
        "db": "Database",
        "edge": "Edge 100%",
        "files": "Files",
    }
    await store.write(
        WriteBatch(
            services=tuple(ServiceRow(i, n, "payments", managed=False) for i, n in names.items()),
            incidents=(
                ("api", incident("i1")),
                ("api", incident("i2", opened_at=T0 + timedelta(seconds=1))),
                ("db", incident("i3", status=IncidentStatus.ACKNOWLEDGED, acknowledged_at=T0)),
                ("files", incident("i4", status=IncidentStatus.RESOLVED, resolved_at=T0)),
            ),
        )
    )

    async def every(unhealthy: bool, text: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after = ""
        while True:
            page = await store.services_page(unhealthy=unhealthy, after=after, limit=2, text=text)
            if page.count:
                found += msgspec.json.decode(b"[" + page.documents + b"]")
            if page.count < 2:
                return found
            assert page.last_id is not None
            after = page.last_id

    unhealthy = await every(True)
    assert [(s["id"], s["health"], s["incident"]["id"]) for s in unhealthy] == [
        ("api", "unhealthy", "i2"),
        ("db", "unhealthy", "i3"),
    ]
    assert unhealthy[1] == {
        "id": "db",
        "name": "Database",
        "policy_id": "payments",
        "health": "unhealthy",
        "incident": {
            "id": "i3",
            "message": "Too many 5xx!",
            "status": "acknowledged",
            "level": 1,
            "opened_at": "2026-11-22T10:00:00.000Z",
            "acknowledged_at": "2026-11-22T10:00:00.000Z",
        },
        "heartbeat_s": None,
        "maintenance": None,
    }
    healthy = await every(False)
    assert [s["id"] for s in healthy] == ["billing", "cache_1", "edge", "files"]
    assert {s["health"] for s in healthy} == {"healthy"}
    assert healthy[0]["incident"] is None
    assert [s["id"] for s in await every(False, "ILL")] == ["billing"]
    assert [s["id"] for s in await every(True, "payments")] == ["api"]
    assert [s["id"] for s in await every(False, "%")] == ["edge"]
    assert [s["id"] for s in await every(False, "_")] == ["cache_1"]
    assert await every(True, "nothing") == []


# --- start-up and directory reads ------------------------------------------------------------


async def test_read_open_states_gives_the_open_incidents_in_chunks(store: Store) -> None:
    """Given open incidents of services whose ids prefix one another, odd text and a
    service with two open incidents, when read two at a time, then each open incident
    comes once, equal to get_incident's reading, in service id order."""
    odd = 'quote " back\\slash\nnew line, ünïcode, \x01'
    rows = (
        ("a0", incident("i1", alert_count=3)),
        ("a", incident("i2", message=odd)),
        ("a-b", incident("i3", status=IncidentStatus.RESOLVED, resolved_at=T0)),
        (
            "a.b",
            incident(
                "i4",
                status=IncidentStatus.ACKNOWLEDGED,
                acknowledged_at=T0 + timedelta(seconds=1),
                acknowledged_by=odd,
                level_index=1,
                round=1,
                step=3,
                ack_deadline=T0 + timedelta(minutes=5),
            ),
        ),
        ("b", incident("i5")),
        ("b", incident("i6", opened_at=T0 + timedelta(seconds=1))),
    )
    await store.write(
        WriteBatch(
            incidents=rows,
            alerts=(
                ("a0", alert("i1", "x")),
                ("a0", alert("i1", odd)),
                ("a0", alert("i1", None)),
                ("a", alert("i2", None)),
            ),
        )
    )
    chunks: list[list[ServiceState]] = []
    await store.read_open_states(chunks.append, chunk=2)

    states = [state for chunk in chunks for state in chunk]
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert [(s.service_id, s.incident.id if s.incident else "") for s in states] == [
        ("a", "i2"),
        ("a.b", "i4"),
        ("a0", "i1"),
        ("b", "i5"),
        ("b", "i6"),
    ]
    pairs = [(s.service_id, s.incident) for s in states if s.incident is not None]
    assert pairs == [await store.get_incident(i.id) for _, i in pairs]
    first = states[2].incident
    assert first is not None
    assert set(first.alert_ids) == {"x", odd}
    assert await load_open_states(store) == states


async def test_start_up_reads_only_the_alert_ids_an_incident_remembers(store: Store) -> None:
    """Given an open incident with more alert ids than it remembers, when start-up reads
    it, then it gets the most recent ones only; the store still knows every one."""
    total = MAX_REMEMBERED_ALERT_IDS + 200
    alerts = tuple((SERVICE, alert("inc-1", f"a-{n}")) for n in range(total))
    await store.write(WriteBatch(incidents=((SERVICE, incident()),), alerts=alerts))

    (state,) = await load_open_states(store)
    assert state.incident is not None
    remembered = set(state.incident.alert_ids)
    assert remembered == {f"a-{n}" for n in range(200, total)}
    assert await store.has_alert("inc-1", "a-0")
    assert not await store.has_alert("inc-1", "a-never")


async def test_read_open_states_of_none_calls_nobody(store: Store) -> None:
    await store.write(WriteBatch(incidents=(("a", incident(status=IncidentStatus.RESOLVED)),)))
    chunks: list[list[ServiceState]] = []
    await store.read_open_states(chunks.append)
    assert chunks == []


async def test_read_open_states_refuses_an_unreadable_row(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    """Given an open incident stored under a service id the domain refuses, then StoreError."""
    store = sqlite_store
    await store.write(WriteBatch(incidents=(("good", incident()),)))
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "pagerd.db")) as conn, conn:
        conn.execute("UPDATE incidents SET service_id = 'not an id!'")
    with pytest.raises(StoreError, match="unreadable"):
        await load_open_states(store)


async def test_service_reader_sees_later_commits(store: Store) -> None:
    """Given a reader made before a service exists, when the service is committed, then the
    reader finds it; once closed, it reads nothing."""
    reader = await store.service_reader()
    assert reader.get("a") is None
    await store.write(
        WriteBatch(
            services=(
                ServiceRow("b", "B", "payments", managed=False),
                ServiceRow("a", "A", "payments", managed=True),
                ServiceRow("c", "C", "other", managed=False),
            )
        )
    )
    assert reader.get("a") == ServiceRow("a", "A", "payments", managed=True)
    assert await store.count_services() == 3
    assert reader.ids_using("payments", 10) == ["a", "b"]
    assert reader.ids_using("payments", 1) == ["a"]
    await store.write(WriteBatch(services=(ServiceRow("b", "B", "other", managed=False),)))
    assert reader.ids_using("payments", 10) == ["a"]
    assert reader.ids_using("other", 10) == ["b", "c"]
    reader.close()
    with pytest.raises(StoreError, match="read failed"):
        reader.get("a")


async def test_service_reader_keeps_no_snapshot(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    """The SQLite reader's reads leave nothing that stops a WAL checkpoint."""
    reader = await sqlite_store.service_reader()
    await sqlite_store.write(WriteBatch(services=(ServiceRow("a", "A", "p", managed=False),)))
    assert reader.get("a") is not None
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "pagerd.db")) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    reader.close()


async def test_services_using_a_policy_are_found_by_index(sqlite_store: SqliteStore) -> None:
    """Deleting a policy asks which services use it: an index answers, not a scan."""
    reader = await sqlite_store.service_reader()
    try:
        plan = reader._read(
            "EXPLAIN QUERY PLAN SELECT id FROM services WHERE policy_id = ? ORDER BY id", ("p",)
        )
    finally:
        reader.close()
    assert any("services_policy" in str(step) for step in plan), plan
