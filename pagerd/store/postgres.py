"""The durable store on PostgreSQL, through asyncpg: the same port as the SQLite store.

Writes go through group commit (``group_commit``): each round of waiting units is one
transaction on the writer's own connection, one ``executemany`` per statement, so
one WAL flush (``synchronous_commit = on``) commits the lot. Reads use a pool of other
connections, so they see committed data only and never wait behind a commit. A
connection that breaks (the server restarted, a failover) fails its round or read,
and the next one connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime
from typing import Protocol

import asyncpg
import msgspec

from pagerd.core.domain import (
    MAX_REMEMBERED_ALERT_IDS,
    Incident,
    Maintenance,
    ServiceState,
)
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
from pagerd.store.group_commit import GroupCommit, TransactionError
from pagerd.store.postgres_bulk_reads import (
    OPEN_STATES_CHUNK,
    OPEN_STATES_FIRST_CHUNK,
    SELECT_OPEN_STATES,
    SELECT_SERVICES_LISTING,
    SERVICES_LISTING_CHUNK,
    decode_open_states,
)
from pagerd.store.postgres_listings import (
    BEFORE_KEY,
    INCIDENTS_ORDER,
    SELECT_HEALTHY_PAGE,
    SELECT_INCIDENT_ALERTS,
    SELECT_INCIDENT_ROWS,
    SELECT_SERVICE_ALERTS,
    SELECT_UNHEALTHY_PAGE,
    STATUS_CLAUSES,
)
from pagerd.store.postgres_schema import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SELECT_INCIDENTS,
    SELECT_OUTBOX,
    SQL,
    Row,
    decode_incident,
    decode_outbox,
    encode_batch,
)
from pagerd.store.postgres_services import ServiceIndex, ServiceReader
from pagerd.store.schema import Op, decode_policy, like_pattern, new_integration_key
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
# A round that takes longer is abandoned (its connection closed): a database that hangs
# must fail writes, so that readiness says so, rather than hold them all forever.
TRANSACTION_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 30.0
READ_POOL_SIZE = 4
# Every session pagerd opens: times written as JSON by the server are UTC, and a commit
# returns only once it is durable, whatever the database's defaults say.
SESSION_SETTINGS = {
    "application_name": "pagerd",
    "timezone": "UTC",
    "synchronous_commit": "on",
}

# Data a unit brought (class 22 data exceptions, class 23 constraint violations, a value
# the driver cannot encode) fails that unit only; anything else is the database's failure.
_UNIT_AT_FAULT: tuple[type[Exception], ...] = (
    asyncpg.DataError,  # class 22; the driver's own refusals of a value are ValueErrors
    asyncpg.IntegrityConstraintViolationError,
    OverflowError,
    ValueError,
    TypeError,
)
FAILURES: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# A session that is gone: the server ended it (class 57, operator intervention), the
# connection broke (class 08), or the driver found it closed or in a state it cannot use.
_CONNECTION_LOST: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
_READ_FAILURES: tuple[type[Exception], ...] = (*FAILURES, ValueError)
_TRANSACTION_FAILURES: tuple[type[Exception], ...] = (*FAILURES, *_UNIT_AT_FAULT)


# The first statement of every round of a node in a cluster (see ``pagerd.store.lease``):
# the round goes on only while the lease is still of this node's epoch and unexpired.
# KEY SHARE lets renewals (an UPDATE of non-key columns) through; a take-over's
# FOR UPDATE waits until the round ends, and a round after it finds the epoch changed.
FENCE = (
    "SELECT true FROM cluster_lease WHERE id = 1 AND epoch = $1"
    " AND expires_at > clock_timestamp() FOR KEY SHARE"
)


class Fence(Protocol):
    """A node's hold on the lease, as its commits check it."""

    @property
    def epoch(self) -> int: ...

    def held(self) -> bool: ...


class NotActiveError(Exception):
    """A write by a node that does not hold the lease (CONTRACT §7: it commits nothing)."""


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{location}"


def session_settings(application_name: str = "pagerd", **more: str) -> dict[str, str]:
    """pagerd's session settings, under ``application_name`` (a node of a cluster names its
    sessions, so that a node taking over can end those of a node whose lease expired)."""
    return {**SESSION_SETTINGS, "application_name": application_name, **more}


async def connect(url: str, settings: dict[str, str] = SESSION_SETTINGS) -> asyncpg.Connection:
    """One session to ``url`` with pagerd's settings; StoreError if it cannot be had."""
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S, server_settings=settings)
    except FAILURES as error:
        raise StoreError(f"cannot connect to {redact(url)}: {error}") from error


async def migrate(conn: asyncpg.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema to version ``len(migrations)``; return how many migrations ran here.

    Each step is a transaction that first takes a transaction-scoped advisory lock, so
    nodes starting together on an empty database apply each migration once: the others
    wait, then find it applied.
    """
    ran = 0
    for target in range(1, len(migrations) + 1):
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                version = await conn.fetchval(
                    "SELECT coalesce(max(version), 0) FROM schema_migrations"
                )
                if version > len(migrations):
                    raise StoreError(
                        f"the database is at schema version {version}, newer than this pagerd"
                        f" knows ({len(migrations)}): run a newer pagerd, or restore a backup"
                    )
                if version >= target:
                    continue
                await conn.execute(migrations[target - 1])
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", target)
        except FAILURES as error:
            raise StoreError(f"migration to schema version {target} failed: {error}") from error
        ran += 1
        log.info("store.migrated", version=target)
    return ran


class PostgresStore:
    """The durable store; make one with ``await PostgresStore.open(url)`` and ``close()`` it."""

    def __init__(
        self,
        url: str,
        writer: asyncpg.Connection,
        readers: asyncpg.Pool,
        settings: dict[str, str] = SESSION_SETTINGS,
    ) -> None:
        self._url = url
        self._settings = settings
        self._writer: asyncpg.Connection | None = writer
        self._readers = readers
        self._services: ServiceIndex | None = None
        self._loading_services: asyncio.Lock = asyncio.Lock()
        self._commits = GroupCommit(self._transaction, order=int)
        self._closed = False
        # In a cluster, commits are fenced (see ``fence``); alone, nothing is checked.
        self._fenced = False
        self._fence: Fence | None = None

    @classmethod
    async def open(cls, url: str, *, application_name: str = "pagerd") -> PostgresStore:
        """Connect to ``url`` and migrate its schema."""
        settings = session_settings(application_name)
        writer = await connect(url, settings)
        try:
            await migrate(writer)
            readers = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=READ_POOL_SIZE,
                timeout=CONNECT_TIMEOUT_S,
                server_settings=settings,
                reset=_keep_session,
            )
        except BaseException as error:
            await writer.close()
            if isinstance(error, FAILURES):
                raise StoreError(f"cannot open {redact(url)}: {error}") from error
            raise
        return cls(url, writer, readers, settings)

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        if self._closed:
            return
        try:
            await self._commits.close()
        finally:
            self._closed = True
            if self._services is not None:
                self._services.close()
            await self._readers.close()
            if self._writer is not None:
                await self._writer.close()

    def fence(self, holder: Fence | None) -> None:
        """Commit from now on only while ``holder`` holds the lease; None: commit nothing.

        Each round first checks the hold locally (a lapsed node sends nothing to the
        database), then in its own transaction (``FENCE``).
        """
        self._fenced = True
        self._fence = holder

    def forget_write_error(self) -> None:
        """A node that became standby: its last failed round says nothing of the database."""
        self._commits.write_error = None

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

    async def _writer_connection(self) -> asyncpg.Connection:
        writer = self._writer
        if writer is not None and not writer.is_closed() and not writer.is_in_transaction():
            return writer
        if writer is not None:
            writer.terminate()  # broken, or left in a transaction by a failed round
        self._writer = None
        try:
            self._writer = await connect(self._url, self._settings)
        except StoreError as error:
            raise TransactionError("connect", error, unit_at_fault=False) from error
        return self._writer

    def _refuse_unfenced(self) -> Fence | None:
        """The fence of this round; TransactionError if this node may not commit at all."""
        fence = self._fence
        if self._fenced and (fence is None or not fence.held()):
            metrics.FENCED_ROUNDS.inc()
            why = "this node does not hold the lease: it is standby"
            raise TransactionError("lease", NotActiveError(why), unit_at_fault=False)
        return fence

    async def _transaction(self, parts: list[tuple[Op, list[Row]]]) -> None:
        for attempt in (1, 2):
            fence = self._refuse_unfenced()
            conn = await self._writer_connection()
            where = "begin"
            try:
                async with asyncio.timeout(TRANSACTION_TIMEOUT_S), conn.transaction():
                    if fence is not None and not await conn.fetchval(FENCE, fence.epoch):
                        metrics.FENCED_ROUNDS.inc()
                        why = f"the lease of epoch {fence.epoch} is no longer this node's"
                        raise TransactionError("lease", NotActiveError(why), unit_at_fault=False)
                    for op, rows in parts:
                        where = op.name.lower()
                        await conn.executemany(SQL[op], rows)
                    where = "commit"
            except _TRANSACTION_FAILURES as error:
                if isinstance(error, TimeoutError) or conn.is_in_transaction():
                    conn.terminate()  # its state is unknown: the next round connects anew
                if attempt == 1 and where == "begin" and isinstance(error, _CONNECTION_LOST):
                    # Found broken (a server restart, a failover) before anything was sent:
                    # once more on a new connection, rather than fail the round.
                    log.warning("store.reconnecting", error=str(error))
                    conn.terminate()
                    continue
                raise TransactionError(
                    where, error, unit_at_fault=isinstance(error, _UNIT_AT_FAULT)
                ) from error
            break
        if self._services is not None:
            for op, rows in parts:
                if op is Op.SERVICES:
                    self._services.committed(rows)

    # -- reads: on the reader pool, so committed data only --

    async def _fetch(self, sql: str, *params: object) -> list[asyncpg.Record]:
        try:
            try:
                return await self._readers.fetch(sql, *params, timeout=READ_TIMEOUT_S)
            except _CONNECTION_LOST:
                # A pooled session the server ended (a restart, a failover): the pool
                # has dropped it, and a read may be asked again on another.
                return await self._readers.fetch(sql, *params, timeout=READ_TIMEOUT_S)
        except _READ_FAILURES as error:
            raise StoreError(f"read failed: {error}") from error

    async def get_meta(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = $1", key)
        return str(rows[0][0]) if rows else None

    async def load_policies(self) -> list[PolicyRow]:
        """Every policy, by id."""
        rows = await self._fetch("SELECT id, body, managed FROM policies ORDER BY id")
        policies = []
        for policy_id, body, managed in rows:
            try:
                policies.append(PolicyRow(decode_policy(policy_id, body), managed))
            except ValueError as error:
                raise StoreError(f"stored policy {policy_id!r} is unreadable: {error}") from error
        return policies

    async def load_teams(self) -> list[TeamRow]:
        """Every team, by id."""
        rows = await self._fetch("SELECT id, name, managed, cursor FROM teams ORDER BY id")
        return [TeamRow(*row) for row in rows]

    async def load_developers(self) -> list[DeveloperRow]:
        """Every developer, by id."""
        rows = await self._fetch(
            "SELECT id, team_id, name, phone_number FROM developers ORDER BY id"
        )
        return [DeveloperRow(*row) for row in rows]

    async def load_schedules(self) -> list[ScheduleRow]:
        """Every schedule with its rotations, by id."""
        schedules = await self._fetch(
            "SELECT id, team_id, time_zone, notify_handover, managed FROM schedules ORDER BY id"
        )
        rows = await self._fetch(
            "SELECT schedule_id, start, shift_s, developer_ids FROM schedule_rotations"
            " ORDER BY schedule_id, position"
        )
        rotations: dict[str, list[Rotation]] = {}
        loaded = []
        for schedule_id, team_id, time_zone, notify_handover, managed in schedules:
            try:
                for _, start, shift_s, ids in (r for r in rows if r[0] == schedule_id):
                    developer_ids = tuple(msgspec.json.decode(ids, type=list[int]))
                    rotations.setdefault(schedule_id, []).append(
                        Rotation(start, shift_s, developer_ids)
                    )
                schedule = Schedule(team_id, time_zone, tuple(rotations.get(schedule_id, ())))
            except (msgspec.DecodeError, DomainError) as error:  # a zone this host lacks
                raise StoreError(
                    f"stored schedule {schedule_id!r} is unreadable: {error}"
                ) from error
            loaded.append(ScheduleRow(schedule_id, schedule, notify_handover, managed))
        return loaded

    async def load_overrides(self) -> list[OverrideRow]:
        """Every override, by id (the order of creation)."""
        rows = await self._fetch(
            'SELECT id, schedule_id, developer_id, start, "end" FROM schedule_overrides ORDER BY id'
        )
        return [
            OverrideRow(schedule, Override(i, developer, start, end))
            for i, schedule, developer, start, end in rows
        ]

    async def last_override_id(self) -> int:
        """The highest override id ever handed out (0 if none): ids are never reused."""
        [(last, called)] = await self._fetch(
            "SELECT last_value, is_called FROM schedule_override_ids"
        )
        return int(last) if called else 0

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
                None if until is None else Maintenance(until, reason),
            )
            for service_id, heartbeat_s, until, reason in rows
        ]

    async def count_services(self) -> int:
        """How many services are registered."""
        rows = await self._fetch("SELECT count(*) FROM services")
        return int(rows[0][0])

    async def refresh_services(self) -> None:
        """Read every service anew: a node taking over, or a standby's view, must see the
        other nodes' commits, which its index only saw its own of."""
        async with self._loading_services:
            index = ServiceIndex()
            await index.fill(self._fetch)
            stale, self._services = self._services, index
            if stale is not None:
                stale.close()

    async def service_reader(self) -> ServiceReader:
        """A synchronous reader of services by id (see ``ServiceIndex``)."""
        async with self._loading_services:
            if self._services is None:
                index = ServiceIndex()
                # Registered before it is filled, so that no commit made meanwhile is missed.
                self._services = index
                try:
                    await index.fill(self._fetch)
                except BaseException:
                    self._services = None
                    raise
        return ServiceReader(self._services)

    async def read_open_states(
        self, handle: Callable[[list[ServiceState]], object], *, chunk: int | None = None
    ) -> None:
        """Hand the state of every service with an open incident to ``handle``, in chunks
        by service id, for start-up.

        The server writes each chunk as one JSON document and msgspec builds the domain
        objects from it in C. The next chunk is read while ``handle`` runs.
        """
        chunk = chunk or OPEN_STATES_CHUNK
        size = min(chunk, OPEN_STATES_FIRST_CHUNK)  # a small first chunk: nothing to overlap
        reading: asyncio.Task[list[asyncpg.Record]] | None = self._open_states_task(("", 0), size)
        try:
            while reading is not None:
                [(text, last_service, last_seq, count)] = await reading
                reading = None
                if count == size:
                    size = chunk
                    reading = self._open_states_task((last_service, last_seq), size)
                if count:
                    handle(decode_open_states(text))
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreError):
                    await reading  # cancelled here, or failed with nobody left to tell

    def _open_states_task(
        self, after: tuple[str, int], chunk: int
    ) -> asyncio.Task[list[asyncpg.Record]]:
        fetch = self._fetch(SELECT_OPEN_STATES, *after, chunk, MAX_REMEMBERED_ALERT_IDS)
        return asyncio.create_task(fetch, name="pagerd[store-open-states]")

    async def services_listing(self, *, chunk: int | None = None) -> AsyncGenerator[bytes, None]:
        """Every service by id as the API lists it: JSON objects joined by commas, a
        chunk at a time, written by the server."""
        chunk = chunk or SERVICES_LISTING_CHUNK
        after = ""  # sorts before every service id, none of which is empty
        while True:
            [(text, last, count)] = await self._fetch(SELECT_SERVICES_LISTING, after, chunk)
            if count:
                yield str(text).encode()
            if count < chunk:
                return
            after = str(last)

    async def get_incident(self, incident_id: str) -> tuple[str, Incident] | None:
        """(service_id, incident), or None if there is no such incident."""
        rows = await self._fetch(SELECT_INCIDENTS + " WHERE i.id = $1", incident_id)
        return decode_incident(tuple(rows[0])) if rows else None

    async def open_incident_of(self, service_id: str) -> Incident | None:
        """The service's open incident as committed (for a node that runs no actors)."""
        sql = SELECT_INCIDENTS + " WHERE i.service_id = $1 AND i.status <> 'resolved'"
        rows = await self._fetch(sql + " ORDER BY i.seq DESC LIMIT 1", service_id)
        return decode_incident(tuple(rows[0]))[1] if rows else None

    async def integration_key(self, service_id: str) -> str | None:
        """The service's integration key; None if there is no such service."""
        rows = await self._fetch("SELECT integration_key FROM services WHERE id = $1", service_id)
        return str(rows[0][0]) if rows else None

    async def service_of_integration_key(self, key: str) -> str | None:
        """The service whose integration key ``key`` is, if any (by the unique index)."""
        rows = await self._fetch("SELECT id FROM services WHERE integration_key = $1", key)
        return str(rows[0][0]) if rows else None

    async def replace_integration_key(self, service_id: str) -> str:
        """Give the service a new integration key, returned once committed: the old one
        stops working at once."""
        key = new_integration_key()
        await self.write(WriteBatch(integration_keys=((service_id, key),)))
        return key

    async def has_alert(self, incident_id: str, alert_id: str) -> bool:
        """Whether the incident has an alert with this id (by the unique index)."""
        sql = "SELECT 1 FROM alerts WHERE incident_id = $1 AND alert_id = $2"
        return bool(await self._fetch(sql, incident_id, alert_id))

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
            params.append(service_id)
            clauses.append(f"i.service_id = ${len(params)}")
        if status is not None:
            clauses.append(STATUS_CLAUSES[status])
        if since is not None:
            params.append(since)
            clauses.append(f"i.opened_at >= ${len(params)}")
        if until is not None:
            params.append(until)
            clauses.append(f"i.opened_at < ${len(params)}")
        if before is not None:
            params += before
            clauses.append(BEFORE_KEY.format(len(params) - 1, len(params)))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        params.append(max(limit, 0))
        sql = SELECT_INCIDENT_ROWS + where + INCIDENTS_ORDER.format(len(params))
        rows = await self._fetch(sql, *params)
        return [IncidentRow(row[0], *decode_incident(tuple(row)[1:])) for row in rows]

    async def incident_row(self, incident_id: str) -> IncidentRow | None:
        """The incident as listed (without its alert ids), or None if there is none."""
        rows = await self._fetch(SELECT_INCIDENT_ROWS + " WHERE i.id = $1", incident_id)
        return IncidentRow(rows[0][0], *decode_incident(tuple(rows[0])[1:])) if rows else None

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
        rows = await self._fetch(sql, key, last, max(limit, 0))
        return [AlertRow(*row) for row in rows]

    async def services_page(
        self, *, unhealthy: bool, after: str, limit: int, text: str | None = None
    ) -> ServicePage:
        """Up to ``limit`` services of one health, by id after ``after``, as the API lists
        them; only those whose id or name contains ``text`` (in any case)."""
        sql = SELECT_UNHEALTHY_PAGE if unhealthy else SELECT_HEALTHY_PAGE
        [(docs, last, count)] = await self._fetch(sql, after, like_pattern(text), limit)
        return ServicePage(b"" if docs is None else str(docs).encode(), int(count), last)

    async def timeline(self, incident_id: str) -> list[tuple[datetime, str, dict[str, object]]]:
        """The incident's timeline as (at, type, detail), in the order it was written."""
        rows = await self._fetch(
            "SELECT at, type, detail FROM timeline WHERE incident_id = $1 ORDER BY seq",
            incident_id,
        )
        return [
            (at, kind, msgspec.json.decode(detail, type=dict[str, object]))
            for at, kind, detail in rows
        ]

    async def notifications(self, incident_id: str) -> list[OutboxRow]:
        """The incident's outbox rows, oldest first."""
        sql = SELECT_OUTBOX + " WHERE incident_id = $1 ORDER BY created_at, seq"
        return [decode_outbox(tuple(row)) for row in await self._fetch(sql, incident_id)]

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, newest first."""
        sql = (
            "SELECT at, source, topic, payload, reason FROM dead_letters ORDER BY seq DESC LIMIT $1"
        )
        return [DeadLetter(*row) for row in await self._fetch(sql, max(limit, 0))]

    async def pending_outbox(self, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` notifications not yet delivered (pending or held), oldest first."""
        sql = (
            SELECT_OUTBOX + " WHERE status IN ('pending', 'held') ORDER BY created_at, seq LIMIT $1"
        )
        return [decode_outbox(tuple(row)) for row in await self._fetch(sql, max(limit, 0))]


# Above every seq: the first page starts here.
_NO_KEY = (1 << 63) - 1


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Readers change no session state: nothing to reset on release (a round trip saved)."""
