"""``pagerd migrate --from PATH --to URL``: a single node's SQLite database, copied whole into
an empty PostgreSQL database.

Everything is kept as it was: ids (teams, developers, incidents, notifications), the
order of writing (each table's ``seq``), rotation cursors, pending notifications and
the acknowledge-link secret, so links already sent keep working. The copy is one
transaction, so a copy that fails leaves the target empty for the next try; rows
are read from one SQLite snapshot and sent with COPY a chunk at a time, so memory
stays bounded whatever the size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from pagerd.core.records import StoreError
from pagerd.store import schema as sqlite_schema
from pagerd.store.migrations import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from pagerd.store.postgres import connect, migrate, redact
from pagerd.store.postgres_schema import MIGRATION_LOCK, TABLES, text

CHUNK_ROWS = 5_000


class CopyRefusedError(Exception):
    """The copy cannot start (a missing or unfit source, a target that is not empty)."""


def _time(value: str | None) -> Any:
    return None if value is None else sqlite_schema.from_db_time(value)


def _flag(value: int) -> bool:
    return bool(value)


def _local_time(value: str) -> Any:
    """A rotation's start: a wall-clock time without zone, as PostgreSQL's timestamp."""
    return datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[str, ...]  # as in PostgreSQL; the SELECT names SQLite's in this order
    select: str
    convert: dict[int, Callable[[Any], Any]]  # column index -> value as PostgreSQL takes it
    sequence: str | None = None  # the identity column to move past the copied values


_TABLES = (
    _Table("meta", ("key", "value"), "SELECT key, value FROM meta ORDER BY key", {}),
    _Table(
        "policies",
        ("id", "body", "managed"),
        "SELECT id, body, managed FROM policies ORDER BY id",
        {2: _flag},
    ),
    _Table(
        "teams",
        ("id", "name", "managed", "cursor"),
        "SELECT id, name, managed, cursor FROM teams ORDER BY id",
        {2: _flag},
    ),
    _Table(
        "developers",
        ("id", "team_id", "name", "phone_number"),
        "SELECT id, team_id, name, phone_number FROM developers ORDER BY id",
        {},
    ),
    _Table(
        "schedules",
        ("id", "team_id", "time_zone", "notify_handover", "managed"),
        "SELECT id, team_id, time_zone, notify_handover, managed FROM schedules ORDER BY id",
        {3: _flag, 4: _flag},
    ),
    _Table(
        "schedule_rotations",
        ("schedule_id", "position", "start", "shift_s", "developer_ids"),
        "SELECT schedule_id, position, start, shift_s, developer_ids FROM schedule_rotations"
        " ORDER BY schedule_id, position",
        {2: _local_time},
    ),
    _Table(
        "schedule_overrides",
        ("id", "schedule_id", "developer_id", "start", "end"),
        'SELECT id, schedule_id, developer_id, start, "end" FROM schedule_overrides ORDER BY id',
        {3: _time, 4: _time},
    ),
    _Table(
        "services",
        (
            "id",
            "name",
            "policy_id",
            "managed",
            "heartbeat_s",
            "maintenance_until",
            "maintenance_reason",
            "integration_key",
        ),
        "SELECT id, name, policy_id, managed, heartbeat_s, maintenance_until,"
        " maintenance_reason, integration_key FROM services ORDER BY id",
        {3: _flag, 5: _time},
    ),
    _Table(
        "incidents",
        (
            "seq",
            "id",
            "service_id",
            "message",
            "opened_at",
            "status",
            "level_index",
            "round",
            "step",
            "ack_deadline",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "alert_count",
            "opened_by",
        ),
        "SELECT rowid, id, service_id, message, opened_at, status, level_index, round, step,"
        " ack_deadline, acknowledged_at, acknowledged_by, resolved_at, alert_count, opened_by"
        " FROM incidents ORDER BY rowid",
        {4: _time, 9: _time, 10: _time, 12: _time},
        sequence="seq",
    ),
    _Table(
        "alerts",
        ("seq", "incident_id", "service_id", "alert_id", "message", "source", "at"),
        "SELECT seq, incident_id, service_id, alert_id, message, source, at"
        " FROM alerts ORDER BY seq",
        {6: _time},
        sequence="seq",
    ),
    _Table(
        "timeline",
        ("seq", "incident_id", "service_id", "at", "type", "detail"),
        "SELECT seq, incident_id, service_id, at, type, detail FROM timeline ORDER BY seq",
        {3: _time},
        sequence="seq",
    ),
    _Table(
        "outbox",
        (
            "seq",
            "id",
            "incident_id",
            "service_id",
            "channel",
            "recipient",
            "developer_id",
            "level",
            "step",
            "message",
            "created_at",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
        ),
        "SELECT rowid, id, incident_id, service_id, channel, recipient, developer_id, level,"
        " step, message, created_at, status, attempts, next_attempt_at, last_error"
        " FROM outbox ORDER BY rowid",
        {10: _time, 13: _time},
        sequence="seq",
    ),
    _Table(
        "dead_letters",
        ("seq", "at", "source", "topic", "payload", "reason"),
        "SELECT seq, at, source, topic, payload, reason FROM dead_letters ORDER BY seq",
        {1: _time},
        sequence="seq",
    ),
)
assert tuple(t.name for t in _TABLES) == TABLES


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise CopyRefusedError(f"{path}: no SQLite database there")
    try:
        # Read-only: the source is never changed, created or migrated.
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        (version,) = source.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as error:
        raise CopyRefusedError(f"{path}: cannot read it as a SQLite database: {error}") from error
    if version != SQLITE_SCHEMA_VERSION:
        source.close()
        raise CopyRefusedError(
            f"{path}: the database is at schema version {version}, and this pagerd copies"
            f" version {SQLITE_SCHEMA_VERSION}: start and stop this pagerd once on it"
            " (it brings the file up to date at start), then run migrate again"
            if version < SQLITE_SCHEMA_VERSION
            else f"{path}: the database is at schema version {version}, newer than this"
            f" pagerd knows ({SQLITE_SCHEMA_VERSION}): use a newer pagerd"
        )
    return source


def _rows(source: sqlite3.Connection, table: _Table) -> Iterator[list[tuple[Any, ...]]]:
    """The table's rows as PostgreSQL takes them, a chunk at a time."""
    cursor = source.execute(table.select)
    while chunk := cursor.fetchmany(CHUNK_ROWS):
        rows = []
        for row in chunk:
            values = [text(v) if isinstance(v, str) else v for v in row]
            for index, convert in table.convert.items():
                values[index] = convert(values[index])
            rows.append(tuple(values))
        yield rows


async def _refuse_unless_empty(conn: asyncpg.Connection, url: str) -> None:
    held = []
    for name in TABLES:
        # A name from TABLES, never from input.
        count = await conn.fetchval(f"SELECT count(*) FROM {name}")  # noqa: S608
        if count:
            held.append(f"{count} {name} rows")
    if held:
        raise CopyRefusedError(
            f"{redact(url)}: the database is not empty (it holds {', '.join(held)}):"
            " migrate copies into an empty database only"
        )


async def _copy_override_ids(source: sqlite3.Connection, conn: asyncpg.Connection) -> None:
    """The highest override id ever handed out, deleted or not: none is handed out twice."""
    row = source.execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'schedule_overrides'"
    ).fetchone()
    if row is not None and row[0]:
        await conn.execute("SELECT setval('schedule_override_ids', $1)", int(row[0]))


async def copy_sqlite_to_postgres(path: Path, url: str) -> dict[str, int]:
    """Copy the SQLite database at ``path`` into the empty PostgreSQL database at ``url``;
    return the rows copied per table. CopyRefusedError if it cannot start, StoreError if
    PostgreSQL fails (nothing is left half-copied)."""
    source = _open_source(path)
    try:
        conn = await connect(url)
        try:
            await migrate(conn)
            return await _copy(source, conn, url)
        finally:
            await conn.close()
    finally:
        source.close()


async def _copy(source: sqlite3.Connection, conn: asyncpg.Connection, url: str) -> dict[str, int]:
    copied: dict[str, int] = {}
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            # A node started meanwhile waits for the copy, rather than write beside it.
            await conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
            await _refuse_unless_empty(conn, url)
            source.execute("BEGIN")  # one snapshot of the source for every table
            try:
                for table in _TABLES:
                    copied[table.name] = 0
                    for rows in _rows(source, table):
                        await conn.copy_records_to_table(
                            table.name, records=rows, columns=list(table.columns)
                        )
                        copied[table.name] += len(rows)
                    if table.sequence is not None:
                        await conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}',"  # noqa: S608
                            f" '{table.sequence}'), coalesce(max({table.sequence}), 0) + 1,"
                            f" false) FROM {table.name}"
                        )
                await _copy_override_ids(source, conn)
            finally:
                source.execute("ROLLBACK")
            await conn.execute("ANALYZE " + ", ".join(TABLES))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        raise StoreError(f"copy into {redact(url)} failed, nothing was kept: {error}") from error
    except sqlite3.Error as error:
        raise StoreError(f"reading the SQLite database failed: {error}") from error
    return copied
