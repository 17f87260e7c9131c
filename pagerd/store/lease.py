"""The active node's lease on PostgreSQL, and the registry of nodes (CONTRACT §7).

One row of ``cluster_lease`` says which node acts, in which epoch, until when by the
database's clock. The active node renews it every ``ttl / 4``; a standby takes it
once it has expired, raising the epoch. Each commit checks its node's epoch in its
own transaction (``postgres.FENCE``), so a node that lost the lease commits nothing, whatever
it believes. Besides, a node keeps its own account of the lease on its monotonic
clock (``Tenure``), started *before* each renewal was sent, so it always ends no
later than the database's: a node that was paused or cut off knows it lapsed the
moment it looks, before any request goes out.

Why a lease row and not a session advisory lock (as GoAlert's engine and switchover
take): a session lock lasts as long as the session, and a paused process or one
behind a partition keeps its session (and the lock) until TCP gives up, minutes
later; a row with an expiry ends at a known time. All of this runs on a connection of
its own, so a renewal never waits behind a commit or a read.

A round of the former holder that was under way when its lease expired still holds
the row: a take-over waits for it a moment (``TAKE_OVER_LOCK_TIMEOUT_MS``), then ends
the former holder's sessions (``pg_terminate_backend``: the nodes connect as one
database role) and takes the lease; the round's commit fails, and its messages, never
acknowledged, are delivered again to the new holder.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg

from pagerd.core.records import StoreError
from pagerd.store.postgres import FAILURES, connect, session_settings
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

# How often the active node renews, and a standby looks, as a fraction of the lease.
RENEWALS_PER_TTL = 4
# A standby looks at least this often (to see a lease released at a shutdown), and a
# lease about to expire no sooner than this after it last looked.
LOOK_EVERY_MAX_S = 1.0
LOOK_EVERY_MIN_S = 0.02
STATEMENT_TIMEOUT_S = 5.0
# A take-over waits this long for a round of the former holder that is under way, then
# ends the former holder's sessions and tries again.
TAKE_OVER_LOCK_TIMEOUT_MS = 250
TAKE_OVER_ATTEMPTS = 3
_LEASE_FAILURES: tuple[type[Exception], ...] = (StoreError, TimeoutError, *FAILURES)

_JOIN = """
INSERT INTO cluster_nodes AS n (node_id, instance, role, since, seen_at, ttl_s)
VALUES ($1, $2, 'standby', clock_timestamp(), clock_timestamp(), $3)
ON CONFLICT (node_id) DO UPDATE SET instance = excluded.instance, role = 'standby',
    since = excluded.since, seen_at = excluded.seen_at, ttl_s = excluded.ttl_s, reason = NULL
WHERE n.instance = excluded.instance OR n.role = 'offline'
    OR n.seen_at < clock_timestamp() - n.ttl_s * interval '1 second'
RETURNING true
"""
_SEEN = "SELECT seen_at FROM cluster_nodes WHERE node_id = $1"
# A standby's look: its own row refreshed, and the lease as it stands.
_LOOK = """
WITH beat AS (
    UPDATE cluster_nodes SET seen_at = clock_timestamp(), reason = $3,
        since = CASE WHEN role = 'standby' THEN since ELSE clock_timestamp() END,
        role = 'standby'
    WHERE node_id = $1 AND instance = $2 RETURNING 1
)
SELECT (SELECT count(*) FROM beat), holder,
    extract(epoch FROM expires_at - clock_timestamp())::float8
FROM cluster_lease WHERE id = 1
"""
_LOCK_EXPIRED = (
    "SELECT epoch FROM cluster_lease WHERE id = 1 AND expires_at <= clock_timestamp() FOR UPDATE"
)
# The sessions of the node whose lease expired, ended: one paused or cut off inside a
# round still holds the lease's row (and the rows it wrote), and the server would keep
# them until TCP gives up. Its sessions carry its instance in their application name.
_END_EXPIRED_HOLDER = """
SELECT count(pg_terminate_backend(a.pid))
FROM pg_stat_activity AS a, cluster_lease AS l
WHERE l.id = 1 AND l.expires_at <= clock_timestamp() AND l.instance IS NOT NULL
    AND a.application_name LIKE 'pagerd/' || l.instance || '/%' AND a.pid <> pg_backend_pid()
"""
_GRANT = """
UPDATE cluster_lease SET epoch = epoch + 1, holder = $1, instance = $2,
    acquired_at = clock_timestamp(), expires_at = clock_timestamp() + $3 * interval '1 second'
WHERE id = 1 RETURNING epoch
"""
_BECOME_ACTIVE = """
UPDATE cluster_nodes SET role = 'active', since = clock_timestamp(), seen_at = clock_timestamp(),
    reason = NULL
WHERE node_id = $1 AND instance = $2
"""
# A lapsed lease is never revived: its node must take a new epoch, and recover anew.
_RENEW = """
WITH renewed AS (
    UPDATE cluster_lease SET expires_at = clock_timestamp() + $3 * interval '1 second'
    WHERE id = 1 AND epoch = $4 AND instance = $2 AND expires_at > clock_timestamp()
    RETURNING 1
), beat AS (
    UPDATE cluster_nodes SET seen_at = clock_timestamp()
    WHERE node_id = $1 AND instance = $2 RETURNING 1
)
SELECT (SELECT count(*) FROM renewed), (SELECT count(*) FROM beat)
"""
_RELEASE = (
    "UPDATE cluster_lease SET expires_at = least(expires_at, clock_timestamp())"
    " WHERE id = 1 AND epoch = $1 AND instance = $2"
)
_LEAVE = (
    "UPDATE cluster_nodes SET role = 'offline', since = clock_timestamp(),"
    " seen_at = clock_timestamp(), reason = NULL WHERE node_id = $1 AND instance = $2"
)
NODES = """
SELECT n.node_id, n.role, n.since, n.seen_at, n.reason,
    n.role <> 'offline' AND n.seen_at >= clock_timestamp() - n.ttl_s * interval '1 second',
    coalesce(l.instance = n.instance AND l.expires_at > clock_timestamp(), false)
FROM cluster_nodes AS n CROSS JOIN cluster_lease AS l WHERE l.id = 1 ORDER BY n.node_id
"""


def new_instance() -> str:
    """A new process's instance: tells it from another with the same node id."""
    return secrets.token_hex(8)


def application_name(instance: str, node_id: str) -> str:
    """What a node's sessions are called in ``pg_stat_activity`` (cut to 63 characters by
    the server; the instance comes first, so it is never cut)."""
    return f"pagerd/{instance}/{node_id}"


class NodeIdInUse(Exception):  # noqa: N818 - the refusal, named for the operator
    """Another live process already runs with this node's id."""


class NodeReplaced(Exception):  # noqa: N818
    """This node's row was taken by a later process with the same id (this one was
    silent longer than its lease)."""


@dataclass(frozen=True, slots=True)
class Holder:
    """The lease as a standby saw it: who holds it, and for how much longer."""

    node_id: str | None
    remaining_s: float  # by the database's clock; 0 or less: free to take


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node as ``pagerd status`` lists it."""

    node_id: str
    role: str  # as the node last said: active, standby or offline
    since: datetime
    seen_at: datetime
    reason: str | None
    live: bool  # seen within its lease_ttl_s, and not offline
    holds_lease: bool


class Tenure:
    """This node's hold on the lease of ``epoch``, by its own monotonic clock."""

    def __init__(self, epoch: int, valid_until: float) -> None:
        self.epoch = epoch
        self.valid_until = valid_until
        self._ended = False

    def held(self) -> bool:
        """Whether this node may still act: checked before every send and commit."""
        return not self._ended and time.monotonic() < self.valid_until

    def extend(self, valid_until: float) -> None:
        self.valid_until = max(self.valid_until, valid_until)

    def end(self) -> None:
        """Act no more, whatever the clock says (released, or found lost)."""
        self._ended = True


class Lease:
    """This node's row and the lease, on a connection of their own."""

    def __init__(self, url: str, node_id: str, ttl_s: float, instance: str | None = None) -> None:
        self.url = url
        self.node_id = node_id
        self.ttl_s = ttl_s
        # Tells this process from another with the same node id (a restart, a mistake).
        self.instance = instance or new_instance()
        self.every_s = ttl_s / RENEWALS_PER_TTL
        # Only a take-over runs more than one statement in a transaction here: a session
        # that falls silent inside one (a paused standby) is ended by the server.
        self._settings = session_settings(
            application_name(self.instance, node_id), idle_in_transaction_session_timeout="1s"
        )
        self._conn: asyncpg.Connection | None = None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _run(
        self, action: str, work: Callable[[asyncpg.Connection], Awaitable[T]], within_s: float
    ) -> T:
        """Run ``work`` on the lease's connection; StoreError naming ``action`` if it fails."""
        try:
            async with asyncio.timeout(max(within_s, 0.001)):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self.url, self._settings)
                return await work(self._conn)
        except _LEASE_FAILURES as error:
            # The session's state is unknown: the next action connects anew.
            await self.close()
            reason = "timed out" if isinstance(error, TimeoutError) else str(error)
            raise StoreError(f"lease: {action} failed: {reason}") from error

    # --- joining -----------------------------------------------------------------------

    async def join(self) -> None:
        """Register this node; NodeIdInUse if a live process already has its id.

        A row seen lately may be this node's own, from a process that just died (a
        restart after a crash): its row is watched until it expires (joined then) or
        is seen again (another live process: refused).
        """
        first_seen: datetime | None = None
        while True:
            joined, seen = await self._run("join", self._try_join, STATEMENT_TIMEOUT_S)
            if joined:
                log.info("cluster.joined", node_id=self.node_id, lease_ttl_s=self.ttl_s)
                return
            if first_seen is None:
                first_seen = seen
                log.warning(
                    "cluster.node_id_seen", node_id=self.node_id, waiting_s=round(self.ttl_s, 3)
                )
            elif seen != first_seen:
                raise NodeIdInUse(
                    f"node_id {self.node_id!r} is in use by another live node: give each"
                    " node its own [cluster] node_id"
                )
            await asyncio.sleep(self.every_s)

    async def _try_join(self, conn: asyncpg.Connection) -> tuple[bool, datetime | None]:
        if await conn.fetchval(_JOIN, self.node_id, self.instance, self.ttl_s):
            return True, None
        return False, await conn.fetchval(_SEEN, self.node_id)

    # --- standby -----------------------------------------------------------------------

    async def try_acquire(self, reason: str | None = None) -> Tenure | Holder:
        """Say this node is standby (``reason``: why, if it cannot act), and take the
        lease if it has expired; the Tenure, or who holds it."""

        async def look(conn: asyncpg.Connection) -> Tenure | Holder:
            row = await conn.fetchrow(_LOOK, self.node_id, self.instance, reason)
            assert row is not None  # the lease's row is made by the migration, never deleted
            beats, holder, remaining = row
            if not beats:
                raise NodeReplaced(f"node_id {self.node_id!r} was taken by another process")
            if remaining is not None and remaining > 0:
                return Holder(holder, remaining)
            for _ in range(TAKE_OVER_ATTEMPTS):
                started = time.monotonic()  # before the grant: the tenure ends before the lease
                try:
                    async with conn.transaction():
                        await conn.execute(f"SET LOCAL lock_timeout = {TAKE_OVER_LOCK_TIMEOUT_MS}")
                        if await conn.fetchval(_LOCK_EXPIRED) is None:
                            return Holder(holder, 0.0)  # renewed or taken: look again soon
                        epoch = await conn.fetchval(_GRANT, self.node_id, self.instance, self.ttl_s)
                        await conn.execute(_BECOME_ACTIVE, self.node_id, self.instance)
                except asyncpg.LockNotAvailableError:
                    ended = await conn.fetchval(_END_EXPIRED_HOLDER)
                    log.warning("cluster.holder_sessions_ended", holder=holder, sessions=ended)
                    continue
                return Tenure(int(epoch), started + self.ttl_s)
            return Holder(holder, 0.0)

        # A look that takes longer than the lease says the database cannot be reached.
        return await self._run("acquire", look, min(STATEMENT_TIMEOUT_S, self.ttl_s))

    def next_look_s(self, holder: Holder | None) -> float:
        """How long a standby waits before it looks again."""
        every = min(self.every_s, LOOK_EVERY_MAX_S)
        if holder is None or holder.remaining_s <= 0:
            return every
        # Just after the lease would expire, so a take-over comes at once.
        return min(every, max(LOOK_EVERY_MIN_S, holder.remaining_s + LOOK_EVERY_MIN_S))

    # --- active ------------------------------------------------------------------------

    async def renew(self, tenure: Tenure) -> bool:
        """Extend the lease by ``ttl_s``; False if it is no longer this node's.

        StoreError if the database did not answer in time; the tenure ends on its own
        when renewals keep failing.
        """
        started = time.monotonic()

        async def renew(conn: asyncpg.Connection) -> tuple[int, int]:
            row = await conn.fetchrow(_RENEW, self.node_id, self.instance, self.ttl_s, tenure.epoch)
            assert row is not None  # one row of two counts
            return int(row[0]), int(row[1])

        # A renewal answered after the tenure's end changes nothing: wait no longer.
        renewed, beats = await self._run("renew", renew, tenure.valid_until - started)
        if not beats:
            raise NodeReplaced(f"node_id {self.node_id!r} was taken by another process")
        if renewed:
            tenure.extend(started + self.ttl_s)
        return bool(renewed)

    async def keep(self, tenure: Tenure) -> str:
        """Renew every ``ttl / 4`` while the tenure holds; return why it ended."""
        next_renewal = time.monotonic() + self.every_s
        while True:
            await asyncio.sleep(max(0.0, min(next_renewal, tenure.valid_until) - time.monotonic()))
            if not tenure.held():
                return f"not renewed within lease_ttl_s ({self.ttl_s:g} s)"
            next_renewal = time.monotonic() + self.every_s
            try:
                if not await self.renew(tenure):
                    return "the lease expired or was taken by another node"
            except StoreError as error:
                log.warning("cluster.renew_failed", node_id=self.node_id, error=str(error))
                metrics.LEASE_EVENTS.labels(event="renew_failed").inc()

    async def release(self, tenure: Tenure) -> None:
        """Let the lease go at once (a clean stop), so a standby takes over now."""
        tenure.end()

        async def release(conn: asyncpg.Connection) -> None:
            await conn.execute(_RELEASE, tenure.epoch, self.instance)

        await self._run("release", release, STATEMENT_TIMEOUT_S)
        log.info("cluster.lease_released", node_id=self.node_id, epoch=tenure.epoch)

    async def leave(self) -> None:
        """Mark this node offline (a clean stop)."""

        async def leave(conn: asyncpg.Connection) -> None:
            await conn.execute(_LEAVE, self.node_id, self.instance)

        await self._run("leave", leave, STATEMENT_TIMEOUT_S)


async def read_nodes(conn: asyncpg.Connection) -> list[NodeRow]:
    """Every node that joined, by id (``pagerd status``)."""
    return [NodeRow(*row) for row in await conn.fetch(NODES)]
