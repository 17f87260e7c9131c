"""The durable store: SQLite (WAL, ``synchronous=FULL``) through aiosqlite.

Writes go through group commit (``group_commit``): each round of waiting units is
one transaction of one ``executemany`` per statement, on aiosqlite's thread, so one
fsync commits the lot. Reads use a second connection, so they see only committed
data and never wait behind a commit's fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from pagerd.core.policy import DomainError
from pagerd.core.records import (
    AlertRow,
    DeadLetter,
    DeveloperRow,
    IncidentRow,
    OutboxRow,
    OverrideRow,
    PolicyRow,
    ScheduleRow,
    ServicePage,
    StoreError,
    TeamRow,
    WatchRow,
    WriteBatch,
)
from pagerd.core.schedules import Override, Rotation, Schedule
from pagerd.core.values import (
    MAX_REMEMBERED_ALERT_IDS,
    AlertIds,
    Incident,
    Maintenance,
    ServiceState,
)
from pagerd.store.aiosqlite_internals import on_db_thread
from pagerd.store.files import private_files
from pagerd.store.group_commit import GroupCommit, TransactionError
from pagerd.store.migrations import MIGRATIONS
from pagerd.store.schema import (
    SELECT_INCIDENTS,
    SELECT_OUTBOX,
    SQL,
    Op,
    Row,
    decode_incident,
    decode_outbox,
    decode_policy,
    decode_rotation,
    encode_batch,
    from_db_time,
    like_pattern,
    new_integration_key,
    to_db_time,
)
from pagerd.store.service_reader import ServiceReader, connect_sync_reader
from pagerd.store.sqlite_listings import (
    BEFORE_KEY,
    INCIDENTS_ORDER,
    SELECT_HEALTHY_PAGE,
    SELECT_INCIDENT_ALERTS,
    SELECT_INCIDENT_ROWS,
    SELECT_SERVICE_ALERTS,
    SELECT_UNHEALTHY_PAGE,
    STATUS_CLAUSES,
)
from pagerd.store.sqlite_rows import STATEMENT_CACHE_SIZE, execute_rows
from pagerd.telemetry.logs import get_logger

log = get_logger(__name__)

BUSY_TIMEOUT_MS = 5_000


# Data a unit brought (a constraint, an unbindable value) fails that unit only; anything
# else (I/O, disk full, locked, corrupt) is the database's failure.
_UNIT_AT_FAULT = (
    sqlite3.IntegrityError
    | sqlite3.DataError
    | sqlite3.InterfaceError
    | sqlite3.ProgrammingError
    | OverflowError
)


# --- opening -----------------------------------------------------------------------------


async def _connect(path: Path, *, read_only: bool) -> aiosqlite.Connection:
    # isolation_level=None: the store issues BEGIN/COMMIT itself. check_same_thread=False
    # lets the event loop read ``in_transaction``; all SQL still runs on aiosqlite's thread.
    # The statement cache holds every chunk size of every write (see sqlite_rows).
    db = await aiosqlite.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=STATEMENT_CACHE_SIZE,
    )
    try:
        await _configure(db, path, read_only=read_only)
    except BaseException:
        await db.close()
        raise
    return db


async def _configure(db: aiosqlite.Connection, path: Path, *, read_only: bool) -> None:
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if read_only:
        await db.execute("PRAGMA query_only = ON")
        return
    async with db.execute("PRAGMA journal_mode = WAL") as cursor:
        row = await cursor.fetchone()
    mode = None if row is None else str(row[0]).lower()
    if mode != "wal":
        raise StoreError(f"{path}: cannot put the database in WAL mode (journal_mode={mode})")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute("PRAGMA foreign_keys = ON")


async def migrate(db: aiosqlite.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema to version ``len(migrations)``; return how many migrations ran."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = 0 if row is None else int(row[0])
    if version > len(migrations):
        raise StoreError(
            f"the database is at schema version {version}, newer than this pagerd knows"
            f" ({len(migrations)}): run a newer pagerd, or restore a backup"
        )
    for target in range(version + 1, len(migrations) + 1):
        # One transaction per step: a failed step leaves the database at the version before.
        script = (
            f"BEGIN IMMEDIATE;\n{migrations[target - 1]}\nPRAGMA user_version = {target};\nCOMMIT;"
        )
        try:
            await db.executescript(script)
        except sqlite3.Error as error:
            await _rollback(db)
            raise StoreError(f"migration to schema version {target} failed: {error}") from error
        log.info("store.migrated", version=target)
    return len(migrations) - version


async def _rollback(db: aiosqlite.Connection) -> None:
    if db.in_transaction:
        try:
            await db.execute("ROLLBACK")
        except sqlite3.Error as error:
            log.error("store.rollback_failed", error=str(error))  # noqa: TRY400 - no traceback


def _apply(conn: sqlite3.Connection, parts: list[tuple[Op, list[Row]]]) -> None:
    """One whole transaction, run on the database's thread (see ``aiosqlite_internals``)."""
    where = "begin"
    try:
        if conn.in_transaction:  # a rollback that failed before may have left one open
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        for op, rows in parts:
            where = op.name.lower()
            execute_rows(conn, SQL[op], rows)
        where = "commit"
        conn.execute("COMMIT")
    except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:
                log.error("store.rollback_failed", error=str(rollback_error))  # noqa: TRY400
        raise TransactionError(
            where, error, unit_at_fault=isinstance(error, _UNIT_AT_FAULT)
        ) from error


# --- the store ---------------------------------------------------------------------------


class Store:
    """The durable store; make one with ``await Store.open(path)`` and ``close()`` it."""

    def __init__(self, db: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._db = db
        self._reader = reader
        self._commits = GroupCommit(self._transaction, order=int)
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating it and its directory if need be) and migrate the database at ``path``."""
        await asyncio.to_thread(private_files, path)
        db = await _connect(path, read_only=False)
        try:
            await migrate(db)
            reader = await _connect(path, read_only=True)
        except BaseException:
            await db.close()
            raise
        return cls(db, reader)

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the database."""
        if self._closed:
            return
        try:
            await self._commits.close()
        finally:
            self._closed = True
            await self._reader.close()
            await self._db.close()

    @property
    def write_error(self) -> str | None:
        """Why the last write failed, until one commits again (readiness reports it)."""
        return self._commits.write_error

    def on_commit(self, callback: Callable[[int, float], None]) -> None:
        """Call ``callback(units, seconds)`` after each commit."""
        self._commits.on_commit(callback)

    async def write(self, batch: WriteBatch) -> None:
        """Commit ``batch`` together with whatever else is waiting; return once committed."""
        try:
            parts = encode_batch(batch)
        except (ValueError, TypeError, AttributeError, msgspec.EncodeError) as error:
            raise StoreError(f"cannot store this write: {error}") from error
        await self._commits.write(batch, parts)

    async def _transaction(self, parts: list[tuple[Op, list[Row]]]) -> None:
        try:
            await on_db_thread(self._db, _apply, parts)
        except ValueError as error:  # aiosqlite's "Connection closed"
            raise TransactionError("begin", error, unit_at_fault=False) from error

    # -- reads: on the reader connection, so committed data only --

    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        try:
            rows: Iterable[Any] = await self._reader.execute_fetchall(sql, params)
        except sqlite3.Error as error:
            raise StoreError(f"read failed: {error}") from error
        return list(rows)

    async def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def load_policies(self) -> list[PolicyRow]:
        """Every policy, by id."""
        rows = await self._fetch("SELECT id, body, managed FROM policies ORDER BY id")
        policies = []
        for policy_id, body, managed in rows:
            try:
                policies.append(PolicyRow(decode_policy(policy_id, body), bool(managed)))
            except ValueError as error:
                raise StoreError(f"stored policy {policy_id!r} is unreadable: {error}") from error
        return policies

    async def load_teams(self) -> list[TeamRow]:
        """Every team, by id."""
        rows = await self._fetch("SELECT id, name, managed, cursor FROM teams ORDER BY id")
        return [TeamRow(i, name, bool(managed), cursor) for i, name, managed, cursor in rows]

    async def load_developers(self) -> list[DeveloperRow]:
        """Every developer, by id."""
        rows = await self._fetch(
            "SELECT id, team_id, name, phone_number FROM developers ORDER BY id"
        )
        return [DeveloperRow(i, team, name, phone) for i, team, name, phone in rows]

    async def load_schedules(self) -> list[ScheduleRow]:
        """Every schedule with its rotations, by id."""
        schedules = await self._fetch(
            "SELECT id, team_id, time_zone, notify_handover, managed FROM schedules ORDER BY id"
        )
        rotations: dict[str, list[Rotation]] = {}
        rows = await self._fetch(
            "SELECT schedule_id, start, shift_s, developer_ids FROM schedule_rotations"
            " ORDER BY schedule_id, position"
        )
        loaded = []
        for schedule_id, team_id, time_zone, notify_handover, managed in schedules:
            try:
                for _, start, shift_s, ids in (r for r in rows if r[0] == schedule_id):
                    rotations.setdefault(schedule_id, []).append(
                        decode_rotation(start, shift_s, ids)
                    )
                schedule = Schedule(team_id, time_zone, tuple(rotations.get(schedule_id, ())))
            except (ValueError, DomainError) as error:  # a zone this host lacks, say
                raise StoreError(
                    f"stored schedule {schedule_id!r} is unreadable: {error}"
                ) from error
            loaded.append(ScheduleRow(schedule_id, schedule, bool(notify_handover), bool(managed)))
        return loaded

    async def load_overrides(self) -> list[OverrideRow]:
        """Every override, by id (the order of creation)."""
        rows = await self._fetch(
            'SELECT id, schedule_id, developer_id, start, "end" FROM schedule_overrides ORDER BY id'
        )
        return [
            OverrideRow(schedule, Override(i, developer, from_db_time(start), from_db_time(end)))
            for i, schedule, developer, start, end in rows
        ]

    async def last_override_id(self) -> int:
        """The highest override id ever handed out (0 if none): ids are never reused."""
        rows = await self._fetch(
            "SELECT seq FROM sqlite_sequence WHERE name = 'schedule_overrides'"
        )
        return int(rows[0][0]) if rows else 0

    async def read_watches(self) -> list[WatchRow]:
        """The services to watch at start-up: a heartbeat interval or a maintenance window."""
        rows = await self._fetch(
            "SELECT id, heartbeat_s, maintenance_until, maintenance_reason FROM services"
            " WHERE heartbeat_s IS NOT NULL OR maintenance_until IS NOT NULL"
        )
        return [
            WatchRow(
                service_id,
                heartbeat_s,
                None if until is None else Maintenance(from_db_time(until), reason),
            )
            for service_id, heartbeat_s, until, reason in rows
        ]

    async def count_services(self) -> int:
        """How many services are registered."""
        rows = await self._fetch("SELECT count(*) FROM services")
        return int(rows[0][0])

    async def service_reader(self) -> ServiceReader:
        """A synchronous reader of services by id, on a read-only connection of its own."""
        rows = await self._fetch("SELECT file FROM pragma_database_list WHERE name = 'main'")
        path = str(rows[0][0])
        try:
            connection = await asyncio.to_thread(connect_sync_reader, path)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open a reader of {path}: {error}") from error
        return ServiceReader(connection)

    async def read_open_states(
        self, handle: Callable[[list[ServiceState]], object], *, chunk: int | None = None
    ) -> None:
        """Hand the state of every service with an open incident to ``handle``, in chunks
        by service id, for start-up.

        SQLite writes a chunk as one JSON document, on the reader's thread, and msgspec
        builds the domain objects from it in C rather than Python decoding rows field by
        field. The next chunk is read while ``handle`` runs.
        """
        chunk = chunk or OPEN_STATES_CHUNK
        # A small first chunk: there is nothing to do meanwhile.
        size = min(chunk, OPEN_STATES_FIRST_CHUNK)
        reading: asyncio.Task[list[Any]] | None = self._open_states_task(("", 0), size)
        try:
            while reading is not None:
                [(text, last, count)] = await reading
                reading = None
                if count == size:
                    size = chunk
                    service_id, _, rowid = str(last).rpartition(_KEY_SEPARATOR)
                    reading = self._open_states_task((service_id, int(rowid)), size)
                    await asyncio.sleep(0)  # the task hands the query to the reader's thread
                if count:
                    handle(_decode_open_states(str(text)))
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await reading  # cancelled here, or failed with nobody left to tell

    def _open_states_task(self, after: tuple[str, int], chunk: int) -> asyncio.Task[list[Any]]:
        fetch = self._fetch(SELECT_OPEN_STATES, (MAX_REMEMBERED_ALERT_IDS, *after, chunk))
        return asyncio.create_task(fetch, name="pagerd[store-open-states]")

    async def services_listing(self, *, chunk: int | None = None) -> AsyncGenerator[bytes, None]:
        """Every service by id as the API lists it: JSON objects joined by commas, a
        chunk at a time.

        SQLite writes each chunk on the reader's thread, so a list of a million services
        never holds the event loop.
        """
        chunk = chunk or SERVICES_LISTING_CHUNK
        after = ""  # sorts before every service id, none of which is empty
        while True:
            [(text, last, count)] = await self._fetch(SELECT_SERVICES_LISTING, (after, chunk))
            if count:
                yield str(text).encode()
            if count < chunk:
                return
            after = str(last)

    async def get_incident(self, incident_id: str) -> tuple[str, Incident] | None:
        """(service_id, incident), or None if there is no such incident."""
        rows = await self._fetch(SELECT_INCIDENTS + " WHERE i.id = ?", (incident_id,))
        return decode_incident(rows[0]) if rows else None

    async def open_incident_of(self, service_id: str) -> Incident | None:
        """The service's open incident as committed (for a node that runs no actors)."""
        sql = SELECT_INCIDENTS + " WHERE i.service_id = ? AND i.status != 'resolved'"
        rows = await self._fetch(sql + " ORDER BY i.rowid DESC LIMIT 1", (service_id,))
        return decode_incident(rows[0])[1] if rows else None

    async def integration_key(self, service_id: str) -> str | None:
        """The service's integration key; None if there is no such service."""
        rows = await self._fetch("SELECT integration_key FROM services WHERE id = ?", (service_id,))
        return str(rows[0][0]) if rows else None

    async def service_of_integration_key(self, key: str) -> str | None:
        """The service whose integration key ``key`` is, if any (by the unique index)."""
        rows = await self._fetch("SELECT id FROM services WHERE integration_key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def replace_integration_key(self, service_id: str) -> str:
        """Give the service a new integration key, returned once committed: the old one
        stops working at once."""
        key = new_integration_key()
        await self.write(WriteBatch(integration_keys=((service_id, key),)))
        return key

    async def has_alert(self, incident_id: str, alert_id: str) -> bool:
        """Whether the incident has an alert with this id (by the unique index)."""
        sql = "SELECT 1 FROM alerts WHERE incident_id = ? AND alert_id = ?"
        return bool(await self._fetch(sql, (incident_id, alert_id)))

    async def list_incidents(
        self,
        *,
        service_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: tuple[datetime, int] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[IncidentRow]:
        """Incidents newest first: of one service, in one status (or ``open``), opened in
        [since, until), and after the key ``before`` (opened_at, seq) of a page's last."""
        clauses: list[str] = []
        params: list[object] = []
        if service_id is not None:
            clauses.append("i.service_id = ?")
            params.append(service_id)
        if status is not None:
            clauses.append(STATUS_CLAUSES[status])
        if since is not None:
            clauses.append("i.opened_at >= ?")
            params.append(to_db_time(since))
        if until is not None:
            clauses.append("i.opened_at < ?")
            params.append(to_db_time(until))
        if before is not None:
            clauses.append(BEFORE_KEY)
            params += [to_db_time(before[0]), before[1]]
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        sql = SELECT_INCIDENT_ROWS + where + INCIDENTS_ORDER
        rows = await self._fetch(sql, [*params, max(limit, 0)])
        return [IncidentRow(row[0], *decode_incident(row[1:])) for row in rows]

    async def incident_row(self, incident_id: str) -> IncidentRow | None:
        """The incident as listed (without its alert ids), or None if there is none."""
        rows = await self._fetch(SELECT_INCIDENT_ROWS + " WHERE i.id = ?", (incident_id,))
        return IncidentRow(rows[0][0], *decode_incident(rows[0][1:])) if rows else None

    async def service_alerts(
        self, service_id: str, *, limit: int, before: int | None = None
    ) -> list[AlertRow]:
        """The service's alerts newest first, those older than the alert ``before`` only."""
        return await self._alerts(SELECT_SERVICE_ALERTS, service_id, limit, before)

    async def incident_alerts(
        self, incident_id: str, *, limit: int, before: int | None = None
    ) -> list[AlertRow]:
        """The incident's alerts newest first, those older than the alert ``before`` only."""
        return await self._alerts(SELECT_INCIDENT_ALERTS, incident_id, limit, before)

    async def _alerts(self, sql: str, key: str, limit: int, before: int | None) -> list[AlertRow]:
        last = _NO_KEY if before is None else before
        rows = await self._fetch(sql, (key, last, max(limit, 0)))
        return [
            AlertRow(seq, from_db_time(at), message, alert_id, source, incident_id)
            for seq, at, message, alert_id, source, incident_id in rows
        ]

    async def services_page(
        self, *, unhealthy: bool, after: str, limit: int, text: str | None = None
    ) -> ServicePage:
        """Up to ``limit`` services of one health, by id after ``after``, as the API lists
        them; only those whose id or name contains ``text`` (ASCII letters in any case)."""
        sql = SELECT_UNHEALTHY_PAGE if unhealthy else SELECT_HEALTHY_PAGE
        [(docs, last, count)] = await self._fetch(sql, (after, like_pattern(text), limit))
        return ServicePage(b"" if docs is None else str(docs).encode(), int(count), last)

    async def timeline(self, incident_id: str) -> list[tuple[datetime, str, dict[str, object]]]:
        """The incident's timeline as (at, type, detail), in the order it was written."""
        rows = await self._fetch(
            "SELECT at, type, detail FROM timeline WHERE incident_id = ? ORDER BY seq",
            (incident_id,),
        )
        return [
            (from_db_time(at), kind, msgspec.json.decode(detail, type=dict[str, object]))
            for at, kind, detail in rows
        ]

    async def notifications(self, incident_id: str) -> list[OutboxRow]:
        """The incident's outbox rows, oldest first."""
        sql = SELECT_OUTBOX + " WHERE incident_id = ? ORDER BY created_at, rowid"
        return [decode_outbox(row) for row in await self._fetch(sql, (incident_id,))]

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, newest first."""
        sql = (
            "SELECT at, source, topic, payload, reason FROM dead_letters ORDER BY seq DESC LIMIT ?"
        )
        rows = await self._fetch(sql, (max(limit, 0),))
        return [DeadLetter(from_db_time(at), *rest) for at, *rest in rows]

    async def pending_outbox(self, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` notifications not yet delivered (pending or held), oldest first."""
        sql = (
            SELECT_OUTBOX
            + " WHERE status = 'pending' OR status = 'held' ORDER BY created_at, rowid LIMIT ?"
        )
        return [decode_outbox(row) for row in await self._fetch(sql, (max(limit, 0),))]


# Above every rowid: the first page starts here.
_NO_KEY = (1 << 63) - 1


# --- start-up and directory reads -----------------------------------------------------------

OPEN_STATES_CHUNK = 5_000
OPEN_STATES_FIRST_CHUNK = 500
_KEY_SEPARATOR = "\x01"  # sorts before every character of a service id
# One chunk of open incidents after the key (service_id, rowid), as a JSON array of
# ``ServiceState`` documents, with the chunk's last key and its size. It walks the
# partial index of open incidents only. ``json()`` keeps the alert ids an array rather
# than a string holding one, of the most recent an incident remembers (the first ``?``);
# the key is text that sorts as (service_id, rowid) does.
SELECT_OPEN_STATES = """
SELECT '[' || group_concat(doc, ',') || ']', max(key), count(*) FROM (
    SELECT json_object(
        'service_id', i.service_id,
        'incident', json_object(
            'id', i.id, 'message', i.message, 'opened_at', i.opened_at, 'status', i.status,
            'level_index', i.level_index, 'round', i.round, 'step', i.step,
            'ack_deadline', i.ack_deadline, 'acknowledged_at', i.acknowledged_at,
            'acknowledged_by', i.acknowledged_by, 'resolved_at', i.resolved_at,
            'alert_count', i.alert_count, 'opened_by', i.opened_by,
            'alert_ids', json((SELECT json_group_array(alert_id) FROM (
                SELECT a.alert_id FROM alerts AS a
                WHERE a.incident_id = i.id AND a.alert_id IS NOT NULL
                ORDER BY a.seq DESC LIMIT ?)))
        )
    ) AS doc,
    i.service_id || char(1) || printf('%020d', i.rowid) AS key
    FROM incidents AS i
    WHERE i.status != 'resolved' AND (i.service_id, i.rowid) > (?, ?)
    ORDER BY i.service_id, i.rowid LIMIT ?
)
"""


def _decode_alert_ids(type_: type, value: object) -> object:
    # msgspec builds every other field itself; AlertIds is the domain's own set type.
    if type_ is AlertIds and isinstance(value, list):
        return AlertIds(value)  # of a TEXT column: strings
    raise TypeError(f"cannot make {type_.__name__} of {value!r}")


_OPEN_STATES = msgspec.json.Decoder(list[ServiceState], dec_hook=_decode_alert_ids)
SERVICES_LISTING_CHUNK = 5_000
# One chunk of services after the id ``?``, each as the API lists it (``ServiceOut``:
# its open incident, if any, times cut to milliseconds), joined by commas, with the
# chunk's last id and its size. ``json()`` keeps the incident an object, not a string.
SELECT_SERVICES_LISTING = """
SELECT group_concat(doc, ','), max(id), count(*) FROM (
    SELECT json_object(
        'id', id, 'name', name, 'policy_id', policy_id,
        'health', iif(brief IS NULL, 'healthy', 'unhealthy'), 'incident', json(brief),
        'heartbeat_s', heartbeat_s,
        'maintenance', iif(maintenance_until IS NULL, NULL, json_object(
            'until', substr(maintenance_until, 1, 23) || 'Z', 'reason', maintenance_reason
        ))
    ) AS doc, id FROM (
        SELECT s.id, s.name, s.policy_id, s.heartbeat_s, s.maintenance_until,
            s.maintenance_reason, (
            SELECT json_object(
                'id', i.id, 'message', i.message, 'status', i.status,
                'level', i.level_index + 1, 'opened_at', substr(i.opened_at, 1, 23) || 'Z',
                'acknowledged_at', substr(i.acknowledged_at, 1, 23) || 'Z'
            ) FROM incidents AS i WHERE i.service_id = s.id AND i.status != 'resolved'
            ORDER BY i.rowid DESC LIMIT 1
        ) AS brief
        FROM services AS s WHERE s.id > ? ORDER BY s.id LIMIT ?
    )
)
"""


def _decode_open_states(text: str) -> list[ServiceState]:
    try:
        return _OPEN_STATES.decode(text)
    except msgspec.DecodeError as error:  # ValidationError included
        raise StoreError(f"a stored open incident is unreadable: {error}") from error
