"""What is PostgreSQL's own in the PostgreSQL store: migrations serialised across nodes,
session settings, native types, lost and hung connections. A real PostgreSQL database
per test (tests/postgres.py); what both stores share is in test_store.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import msgspec
import pytest

from pagerd.core.domain import Incident, RecordAlert, ServiceState
from pagerd.core.records import ServiceRow, StoreError, WriteBatch
from pagerd.store import postgres as postgres_module
from pagerd.store.postgres import PostgresStore, migrate, redact
from pagerd.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from pagerd.store.postgres_services import ServiceIndex
from tests.postgres import Databases

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.open(postgres_url)
    yield opened
    await opened.close()


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A session of the test's own on the database, beside the store's."""
    conn = await asyncpg.connect(postgres_url)
    yield conn
    await conn.close()


def opened(incident_id: str, service_id: str = "svc", message: str = "down") -> WriteBatch:
    return WriteBatch(
        incidents=((service_id, Incident(incident_id, message, T0)),),
        alerts=((service_id, RecordAlert(incident_id, message, None, None, T0)),),
    )


def write_error(store: PostgresStore) -> str | None:
    return store.write_error


async def versions(conn: asyncpg.Connection) -> list[int]:
    return [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]


# --- migrations --------------------------------------------------------------------------


async def test_migrations_are_recorded_and_run_once(
    store: PostgresStore, admin: asyncpg.Connection
) -> None:
    assert await versions(admin) == list(range(1, SCHEMA_VERSION + 1))
    added = (*MIGRATIONS, "CREATE TABLE extra (x integer)")
    assert await migrate(admin) == 0
    assert await migrate(admin, added) == 1
    assert await migrate(admin, added) == 0
    assert await versions(admin) == list(range(1, SCHEMA_VERSION + 2))


async def test_nodes_starting_together_on_an_empty_database_migrate_once(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    """Given five nodes opening one empty database at once, then every one opens, and each
    migration ran once (the advisory lock serialises them)."""
    stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(5)))
    try:
        assert await versions(admin) == list(range(1, SCHEMA_VERSION + 1))
        await stores[0].write(opened("inc-1"))
        assert await stores[4].get_incident("inc-1") is not None
    finally:
        for store in stores:
            await store.close()


async def test_a_failed_migration_leaves_the_previous_version(
    store: PostgresStore, admin: asyncpg.Connection
) -> None:
    broken = (*MIGRATIONS, "CREATE TABLE half (x integer); CREATE TABLE half (y integer);")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await migrate(admin, broken)
    assert await versions(admin) == list(range(1, SCHEMA_VERSION + 1))
    assert await admin.fetchval("SELECT to_regclass('half')") is None


async def test_a_database_newer_than_the_code_is_refused(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    await (await PostgresStore.open(postgres_url)).close()
    await admin.execute("INSERT INTO schema_migrations (version) VALUES ($1)", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer than this pagerd"):
        await PostgresStore.open(postgres_url)


# --- sessions and types ------------------------------------------------------------------


async def test_commits_wait_for_the_flush_whatever_the_database_default(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    """Given a database whose default is synchronous_commit off, then pagerd's sessions still
    commit with it on (a PUBACK or a 2xx follows a durable commit), in UTC."""
    database = postgres_url.rsplit("/", 1)[1]
    await admin.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
    store = await PostgresStore.open(postgres_url)
    try:
        writer = store._writer
        assert writer is not None
        assert await writer.fetchval("SHOW synchronous_commit") == "on"
        assert await writer.fetchval("SHOW timezone") == "UTC"
        async with store._readers.acquire() as reader:
            assert await reader.fetchval("SHOW timezone") == "UTC"
    finally:
        await store.close()


async def test_times_are_timestamptz_and_come_back_aware(
    store: PostgresStore, admin: asyncpg.Connection
) -> None:
    paris = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 22, 11, 0, 0, 300, tzinfo=paris)
    await store.write(WriteBatch(incidents=(("svc", Incident("inc-1", "down", at)),)))
    row = await admin.fetchrow(
        "SELECT pg_typeof(opened_at)::text, opened_at AT TIME ZONE 'UTC' FROM incidents"
    )
    assert row is not None
    kind, text = row
    assert kind == "timestamp with time zone"
    assert text == datetime(2026, 11, 22, 10, 0, 0, 300)
    found = await store.get_incident("inc-1")
    assert found is not None
    assert found[1].opened_at == at
    assert found[1].opened_at.utcoffset() == timedelta(0)
    states: list[ServiceState] = []
    await store.read_open_states(states.extend)
    assert states[0].incident is not None
    assert states[0].incident.opened_at == at


async def test_a_nul_in_text_is_kept_as_a_replacement_character(store: PostgresStore) -> None:
    """PostgreSQL's text cannot hold NUL, which an MQTT alert may carry: it is stored as
    U+FFFD rather than failing the commit (and the broker redelivering it for ever)."""
    await store.write(opened("inc-1", message="a\x00b"))
    await store.write(
        WriteBatch(alerts=(("svc", RecordAlert("inc-1", "x\x00", "id\x00", "src\x00", T0)),))
    )
    found = await store.get_incident("inc-1")
    assert found is not None
    assert found[1].message == "a\ufffdb"
    assert set(found[1].alert_ids) == {"id\ufffd"}


async def test_ids_sort_as_bytes_whatever_the_database_collation(
    postgres_databases: Databases,
) -> None:
    """Given a database whose collation sorts "a" before "B" (ICU en-US), then chunked reads
    still page by byte order, as SQLite does: each row once, in the same order."""
    cluster = postgres_databases.cluster
    cluster.psql(
        "CREATE DATABASE icu_test TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        " LOCALE 'C.UTF-8'"
    )
    url = cluster.url("icu_test")
    try:
        store = await PostgresStore.open(url)
        try:
            ids = ["b", "B", "a", "C", "a-b", "a.b", "a0"]
            await store.write(
                WriteBatch(
                    services=tuple(ServiceRow(i, i, "p", managed=False) for i in ids),
                    incidents=tuple((i, Incident(f"inc-{i}", "down", T0)) for i in ids),
                )
            )
            states: list[ServiceState] = []
            await store.read_open_states(states.extend, chunk=2)
            assert [s.service_id for s in states] == sorted(ids)
            listed = [chunk async for chunk in store.services_listing(chunk=2)]
            assert len(listed) == 4
            assert b",".join(listed).count(b'"health"') == len(ids)
            reader = await store.service_reader()
            assert reader.ids_using("p", 10) == sorted(ids)
        finally:
            await store.close()
    finally:
        postgres_databases.drop(url)


# --- lost, unreachable and hung databases ------------------------------------------------


async def test_the_writer_connects_again_when_the_server_ended_its_session(
    store: PostgresStore, admin: asyncpg.Connection
) -> None:
    """Given the writer's session ended by the server (a restart, a failover), then the next
    write commits on a new session, and nothing failed."""
    await store.write(opened("inc-1"))
    writer = store._writer
    assert writer is not None
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", writer.get_server_pid())
    await store.write(opened("inc-2"))
    assert store.write_error is None
    assert await store.get_incident("inc-2") is not None


async def test_reads_go_on_when_the_server_ended_the_pooled_sessions(
    store: PostgresStore, admin: asyncpg.Connection
) -> None:
    await store.write(opened("inc-1"))
    assert await store.get_incident("inc-1") is not None
    ended = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert ended >= 2  # the writer's and at least one reader's
    assert await store.get_incident("inc-1") is not None
    await store.write(opened("inc-2"))
    assert await store.get_incident("inc-2") is not None


async def test_an_unreachable_database_fails_the_round_and_the_writer_goes_on(
    store: PostgresStore, postgres_databases: Databases, postgres_url: str
) -> None:
    cluster = postgres_databases.cluster
    database = postgres_url.rsplit("/", 1)[1]
    writer = store._writer
    assert writer is not None
    cluster.psql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
    cluster.psql(f"SELECT pg_terminate_backend({writer.get_server_pid()})")

    results = await asyncio.gather(
        *(store.write(opened(f"inc-{n}", f"svc-{n}")) for n in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results), results
    assert "cannot connect" in str(results[0])
    assert write_error(store) is not None

    cluster.psql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    await store.write(opened("inc-after"))
    assert write_error(store) is None
    assert await store.get_incident("inc-after") is not None
    assert await store.get_incident("inc-0") is None


async def test_a_hung_database_fails_the_round_within_the_timeout(
    store: PostgresStore, admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a table locked by another session, then a write fails after the transaction
    timeout instead of waiting for ever, and the next one commits once the lock is gone."""
    monkeypatch.setattr(postgres_module, "TRANSACTION_TIMEOUT_S", 0.5)
    transaction = admin.transaction()
    await transaction.start()
    await admin.execute("LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE")
    try:
        async with asyncio.timeout(5):
            with pytest.raises(StoreError, match="alerts"):
                await store.write(opened("inc-1"))
    finally:
        await transaction.rollback()
    await store.write(opened("inc-2"))
    assert await store.get_incident("inc-2") is not None
    assert await store.get_incident("inc-1") is None


async def test_read_open_states_refuses_an_unreadable_row(
    store: PostgresStore, admin: asyncpg.Connection
) -> None:
    await store.write(opened("inc-1"))
    await admin.execute("UPDATE incidents SET service_id = 'not an id!'")
    with pytest.raises(StoreError, match="unreadable"):
        await store.read_open_states(lambda states: None)


def test_a_url_is_shown_without_its_password() -> None:
    assert redact("postgresql://pagerd:s3cret@db1,db2/pagerd") == (
        "postgresql://pagerd:***@db1,db2/pagerd"
    )
    assert redact("postgresql://pagerd@db/pagerd") == "postgresql://pagerd@db/pagerd"
    assert redact("postgresql:///pagerd?host=/run") == "postgresql:///pagerd?host=/run"


# --- the services index ------------------------------------------------------------------


async def test_the_services_index_keeps_a_commit_made_while_it_was_filled() -> None:
    """Given a chunk read before a service was renamed, when the rename commits while the
    index is being filled, then the index keeps the renamed row."""
    index = ServiceIndex()
    chunks = [
        [ServiceRow("a", "A (old)", "p", False), ServiceRow("b", "B", "p", False)],
        [ServiceRow("c", "C", "q", True)],
    ]

    async def fetch(sql: str, after: str, chunk: int) -> list[tuple[str, str, int]]:
        if after == "":
            index.committed(
                [("a", "A (new)", "q", False, None, "k1")]
            )  # commits as the chunk is read
        rows = chunks.pop(0)
        return [(msgspec.json.encode(rows).decode(), rows[-1].id, len(rows))]

    await index.fill(fetch, chunk=2)
    assert index.get("a") == ServiceRow("a", "A (new)", "q", managed=False)
    assert index.get("c") == ServiceRow("c", "C", "q", managed=True)
    assert index.ids_using("p", 10) == ["b"]
    assert index.ids_using("q", 10) == ["a", "c"]
    index.committed([("d", "D", "q", False, None, "k2")])
    assert index.ids_using("q", 2) == ["a", "c"]
