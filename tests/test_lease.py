"""The lease of CONTRACT §7 on a real PostgreSQL: one holder at a time, epochs, expiry by the
database's clock, node ids refused while live, and commits fenced by the epoch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from pagerd.core.domain import Incident
from pagerd.core.records import StoreError, WriteBatch
from pagerd.store.lease import (
    Holder,
    Lease,
    NodeIdInUse,
    NodeReplaced,
    Tenure,
    application_name,
    read_nodes,
)
from pagerd.store.postgres import FENCE, PostgresStore, connect, session_settings
from tests.harness import eventually

TTL = 1.0
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.open(postgres_url)  # migrates: the lease tables exist
    yield opened
    await opened.close()


@pytest.fixture
async def leases(store: PostgresStore, postgres_url: str) -> AsyncIterator[Callable[..., Lease]]:
    made: list[Lease] = []

    def make(node_id: str, ttl_s: float = TTL) -> Lease:
        made.append(Lease(postgres_url, node_id, ttl_s))
        return made[-1]

    yield make
    for lease in made:
        await lease.close()


def opened(incident_id: str) -> WriteBatch:
    return WriteBatch(incidents=(("svc", Incident(incident_id, "down", T0)),))


async def acquired(lease: Lease) -> Tenure:
    got = await lease.try_acquire()
    assert isinstance(got, Tenure), got
    return got


async def test_one_node_holds_the_lease_and_another_takes_it_only_once_it_expired(
    leases: Callable[..., Lease],
) -> None:
    # Twice the other tests' TTL: a's renewal below must fit in what is left of its first
    # tenure after b's look, which a busy 2-core machine can make last a good part of 1 s.
    ttl = 2 * TTL
    a, b = leases("a", ttl_s=ttl), leases("b", ttl_s=ttl)
    await a.join()
    await b.join()

    first = await acquired(a)
    seen = await b.try_acquire()

    assert first.epoch == 1
    assert first.held()
    assert isinstance(seen, Holder)
    assert seen.node_id == "a"
    assert 0 < seen.remaining_s <= ttl
    assert await a.renew(first)
    # a stops renewing: its own account lapses first, then the database's lease.
    await eventually(lambda: not first.held(), timeout=ttl + 1, what="a's tenure to lapse")
    deadline = time.monotonic() + ttl + 1
    while not isinstance(second := await b.try_acquire(), Tenure):
        assert time.monotonic() < deadline, "b never took the lease"
        await asyncio.sleep(b.next_look_s(second))
    assert second.epoch == 2
    # The database's own check, given all the time it needs: a renewal of the old epoch
    # is refused even from a node whose clock still counts its tenure as held.
    stale = Tenure(first.epoch, time.monotonic() + ttl)
    assert not await a.renew(stale), "a lapsed lease is never renewed"


async def test_a_released_lease_is_taken_at_once(leases: Callable[..., Lease]) -> None:
    a, b = leases("a", ttl_s=60.0), leases("b", ttl_s=60.0)
    await a.join()
    await b.join()
    tenure = await acquired(a)

    await a.release(tenure)

    assert not tenure.held()
    assert (await acquired(b)).epoch == 2


async def test_a_live_node_id_is_refused_and_a_dead_ones_row_is_taken_over(
    leases: Callable[..., Lease],
) -> None:
    first, second = leases("same"), leases("same")
    await first.join()
    joining = asyncio.create_task(second.join())
    # first goes on saying it is alive, as a running node does between looks.
    while not joining.done():
        await first.try_acquire()
        await asyncio.sleep(0.05)
    with pytest.raises(NodeIdInUse, match="node_id 'same' is in use by another live node"):
        await joining

    # first falls silent (a crash): its row expires, and a new process takes it.
    third = leases("same")
    async with asyncio.timeout(TTL * 3):
        await third.join()
    with pytest.raises(NodeReplaced):
        await first.try_acquire()


async def test_a_commit_checks_the_epoch_in_its_own_transaction(
    store: PostgresStore, postgres_url: str, leases: Callable[..., Lease]
) -> None:
    a, b = leases("a"), leases("b")
    await a.join()
    await b.join()
    tenure = await acquired(a)
    store.fence(tenure)
    await store.write(opened("i-1"))

    # a is paused past its lease; b takes over. a's own account is forged to say it
    # still holds: the database's check refuses the commit all the same.
    await eventually(lambda: not tenure.held(), timeout=TTL + 1, what="a's tenure to lapse")
    while not isinstance(await b.try_acquire(), Tenure):
        await asyncio.sleep(0.05)
    tenure.extend(time.monotonic() + 60)
    with pytest.raises(StoreError, match="the lease of epoch 1 is no longer this node's"):
        await store.write(opened("i-2"))

    conn = await asyncpg.connect(postgres_url)
    try:
        assert [r[0] for r in await conn.fetch("SELECT id FROM incidents")] == ["i-1"]
    finally:
        await conn.close()


async def test_a_lapsed_or_missing_tenure_commits_nothing_and_asks_nothing(
    store: PostgresStore, leases: Callable[..., Lease]
) -> None:
    store.fence(None)  # a standby
    with pytest.raises(StoreError, match="this node does not hold the lease"):
        await store.write(opened("i-1"))

    lapsed = Tenure(epoch=1, valid_until=time.monotonic() - 0.001)
    store.fence(lapsed)
    with pytest.raises(StoreError, match="this node does not hold the lease"):
        await store.write(opened("i-1"))


async def test_a_take_over_ends_a_silent_former_holder_inside_a_round_which_commits_nothing(
    postgres_url: str, leases: Callable[..., Lease]
) -> None:
    """Given the holder's round has checked its epoch and written, when the holder falls
    silent (paused, cut off) and its lease expires, then a take-over does not wait for it
    (the server would keep that session until TCP gives up): it ends the former holder's
    sessions and takes the lease, and the round's write is never committed."""
    a, b = leases("a"), leases("b")
    await a.join()
    await b.join()
    tenure = await acquired(a)
    # A session of a's, as its writer's are named, inside a round.
    paused = await connect(postgres_url, session_settings(application_name(a.instance, "a")))
    try:
        await paused.execute("BEGIN")
        assert await paused.fetchval(FENCE, tenure.epoch)
        await paused.execute("INSERT INTO meta (key, value) VALUES ('late', 'write')")
        await eventually(lambda: not tenure.held(), timeout=TTL + 1, what="a's lease to lapse")
        started = time.monotonic()
        while not isinstance(got := await b.try_acquire(), Tenure):
            assert time.monotonic() - started < TTL + 1, "the take-over waited for a's round"
            await asyncio.sleep(b.next_look_s(got))
        assert got.epoch == 2
        # The server ended the session: asyncpg says so in one way or another.
        with pytest.raises(
            (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
        ):
            await paused.execute("COMMIT")
    finally:
        paused.terminate()
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM meta WHERE key = 'late'") == 0
    finally:
        await conn.close()


async def test_nodes_are_listed_with_their_roles(
    leases: Callable[..., Lease], postgres_url: str
) -> None:
    a, b = leases("a", ttl_s=60.0), leases("b", ttl_s=60.0)
    await a.join()
    await b.join()
    await acquired(a)
    await b.try_acquire()
    await b.leave()

    conn = await asyncpg.connect(postgres_url)
    try:
        nodes = await read_nodes(conn)
    finally:
        await conn.close()
    assert [(n.node_id, n.role, n.live, n.holds_lease) for n in nodes] == [
        ("a", "active", True, True),
        ("b", "offline", False, False),
    ]
