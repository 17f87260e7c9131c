"""Two pagerd processes on one PostgreSQL and one mosquitto (CONTRACT §7): one active, one
standby; the active one SIGKILLed, paused, or cut off from the database."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import PagerdFactory
from tests.faults.firehose import Firehose, alert
from tests.harness import (
    API_TOKEN,
    Monitor,
    Mosquitto,
    Pagerd,
    Policy,
    SmsStandIn,
    eventually,
    sms,
)
from tests.netproxy import TcpProxy

ONE = "+15550000001"
TWO = "+15550000002"
TTL = 1.0  # the least lease_ttl_s: take-overs within seconds
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

pytestmark = pytest.mark.slow


def node(node_id: str, ttl: float = TTL) -> dict[str, Any]:
    return {"node_id": node_id, "lease_ttl_s": ttl}


async def role_of(daemon: Pagerd, role: str, *, timeout: float) -> float:
    """Wait until ``daemon``'s /readyz names ``role``; return how long it took."""
    started = time.monotonic()
    deadline = started + timeout
    while await daemon.role() != role:
        assert time.monotonic() < deadline, f"{daemon.cluster} is not {role}:\n{daemon.tail()}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def monotonic_of(at: datetime) -> float:
    """A wall-clock instant on this process's monotonic clock (the pages' clock)."""
    return at.timestamp() - (time.time() - time.monotonic())


Pair = Callable[..., tuple[Pagerd, Pagerd]]


# make_pagerd after postgres_url: its processes are stopped before the database is dropped.
@pytest.fixture
def pair(postgres_url: str, make_pagerd: PagerdFactory) -> Pair:
    """Nodes "a" and "b" of one cluster, with the same policies and services."""

    def make(
        policies: list[Policy], services: dict[str, str], **options: Any
    ) -> tuple[Pagerd, Pagerd]:
        a, b = (
            make_pagerd(policies, services, database_url=postgres_url, cluster=node(n), **options)
            for n in ("a", "b")
        )
        return a, b

    return make


async def start_pair(a: Pagerd, b: Pagerd) -> None:
    """a becomes active (READY once subscribed), then b stands by behind it."""
    await a.start()
    await b.start()
    assert await a.readyz() == (200, {"role": "active"})
    assert await b.readyz() == (503, {"role": "standby", "active": "a"})


async def test_each_node_says_its_role_on_mqtt_in_pagerd_status_and_in_metrics(
    pair: Pair, monitor: Monitor, broker: Mosquitto
) -> None:
    """Given two nodes, then {prefix}/nodes/{node_id} (retained) says which is active and
    which standby, as do `pagerd status` and pagerd_role; a node killed shows offline (its
    will), and one stopped says so itself."""
    a, b = pair([Policy("p", [(60.0, [sms(ONE)])])], {"svc": "p"})
    await start_pair(a, b)

    def roles() -> dict[str, str]:
        return {n: m["role"] for n in ("a", "b") for m in monitor.on(f"nodes/{n}")[-1:]}

    await eventually(lambda: roles() == {"a": "active", "b": "standby"}, what="roles on MQTT")
    assert await a.metric('pagerd_role{role="active"}') == 1
    assert await b.metric('pagerd_role{role="standby"}') == 1
    status = await pagerd_status(a)
    assert [line.split()[:2] for line in status[status.index("NODE") :].splitlines()] == [
        ["NODE", "ROLE"],
        ["a", "active"],
        ["b", "standby"],
    ]

    a.kill()
    await eventually(lambda: roles() == {"a": "offline", "b": "active"}, timeout=TTL + 5)
    await b.stop()
    await eventually(lambda: roles()["b"] == "offline", what="b offline")
    status = await pagerd_status(a)
    assert [line.split()[:2] for line in status[status.index("NODE") :].splitlines()][1:] == [
        ["a", "offline"],
        ["b", "offline"],
    ]


async def pagerd_status(daemon: Pagerd) -> str:
    status = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pagerd", "status", "--config", str(daemon.write_config())),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await status.communicate()
    assert status.returncode == 0
    return out.decode()


async def test_two_nodes_started_together_on_an_empty_database_agree_on_one(
    pair: Pair, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given two nodes started at once on an empty database, then the migrations run once,
    one node becomes active and applies the declared objects, the other stands by and
    reads them from the database, a maintenance window included."""
    a, b = pair([Policy("p", [(60.0, [sms(ONE)])])], {"svc": "p"})
    await asyncio.gather(a.start(wait_ready=False), b.start(wait_ready=False))
    await asyncio.gather(a.ready(), b.ready())

    roles = {await a.role(), await b.role()}
    assert roles == {"active", "standby"}
    standby, active = (a, b) if await a.role() == "standby" else (b, a)
    until = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    window = {"until": until, "reason": "deploy"}
    async with aiohttp.ClientSession() as http:
        url = f"{active.base_url}/api/v1/services/svc/maintenance"
        async with http.post(url, json=window, headers=AUTH) as response:
            assert response.status == 201, await response.text()
        async with http.get(f"{standby.base_url}/api/v1/services/svc", headers=AUTH) as response:
            assert response.status == 200, await response.text()
            shown = await response.json()
        assert (shown["policy_id"], shown["maintenance"]) == ("p", window)
        async with http.delete(url, headers=AUTH) as response:
            assert response.status in {200, 204}, await response.text()
    await monitor.publish("alert", "svc", "down")
    await eventually(lambda: bool(sms_service.to(ONE)), what="the page")


async def test_a_second_live_node_with_the_same_id_is_refused(
    pair: Pair, make_pagerd: PagerdFactory, postgres_url: str
) -> None:
    a, _ = pair([Policy("p", [(60.0, [sms(ONE)])])], {"svc": "p"})
    await a.start()
    twin = make_pagerd([], {}, database_url=postgres_url, cluster=node("a"))
    await twin.start(wait_ready=False)
    assert twin.process is not None
    code = await asyncio.to_thread(twin.process.wait, 3 * TTL + 10)
    assert code == 2, twin.tail()
    [refusal] = [e for e in twin.log_events() if e.get("event") == "cluster.node_id_in_use"]
    assert "node_id 'a' is in use by another live node" in refusal["error"]
    assert await a.readyz() == (200, {"role": "active"})


async def test_a_node_started_before_its_database_waits_for_it(
    make_pagerd: PagerdFactory, postgres_url: str, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a node whose database cannot be reached yet, then it keeps trying, serves
    /healthz, and /readyz says why it cannot act; once the database is there, it acts."""
    proxy = TcpProxy(int(postgres_url.rsplit(":", 1)[1].split("/", 1)[0]))
    url = postgres_url.replace(f":{proxy.target}/", f":{proxy.port}/")
    a = make_pagerd(
        [Policy("p", [(60.0, [sms(ONE)])])], {"svc": "p"}, database_url=url, cluster=node("a")
    )
    await a.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 10
        while (ready := await ready_or_none(a)) is None or "database" not in str(ready[1]):
            assert time.monotonic() < deadline, a.tail()
            await asyncio.sleep(0.05)
        assert ready[0] == 503
        assert ready[1]["role"] == "standby"
        assert ready[1]["active"] is None
        async with aiohttp.ClientSession() as http, http.get(f"{a.base_url}/healthz") as health:
            assert health.status == 200

        await proxy.start()
        await a.ready()
        await monitor.publish("alert", "svc", "down")
        await eventually(lambda: bool(sms_service.to(ONE)), what="the page")
        assert await a.stop() == 0
    finally:
        await proxy.stop()


async def ready_or_none(daemon: Pagerd) -> tuple[int, dict[str, Any]] | None:
    try:
        return await daemon.readyz()
    except (OSError, TimeoutError, aiohttp.ClientError):
        return None


@pytest.mark.parametrize("workers", [0, 1], ids=["on-the-loop", "sender-processes"])
async def test_sigkill_at_level_1_the_standby_pages_level_2_once_at_its_deadline(
    pair: Pair,
    monitor: Monitor,
    sms_service: SmsStandIn,
    postgres_url: str,
    workers: int,
) -> None:
    """Given an incident waiting at level 1 on the active node, when that node is SIGKILLed,
    then the standby pages level 2 exactly once, no earlier than the deadline the dead node
    set, and no later than that deadline + lease_ttl_s + 3 s; the same with each node's
    pages going through a sender process ([notify] workers = 1)."""
    timeout = 1.0  # level 1's deadline falls while the standby takes over
    a, b = pair(
        [Policy("p", [(timeout, [sms(ONE)]), (60.0, [sms(TWO)])])],
        {"svc": "p"},
        notify={"workers": workers},
    )
    await start_pair(a, b)
    assert [len(sender_processes(node)) for node in (a, b)] == [workers, workers]

    await monitor.publish("alert", "svc", "down")
    await eventually(lambda: bool(sms_service.to(ONE)), what="level 1's page")
    [(deadline,)] = await fetch(postgres_url, "SELECT ack_deadline FROM incidents")
    a.kill()

    await eventually(lambda: bool(sms_service.to(TWO)), timeout=timeout + TTL + 5, what="level 2")
    await role_of(b, "active", timeout=TTL + 2)
    [page] = sms_service.to(TWO)
    due = monotonic_of(deadline)
    assert due - 0.05 <= page.at <= due + TTL + 3, (page.at - due, b.tail())
    # Committed as sent: nothing will send it again.
    status = "SELECT status FROM outbox WHERE recipient = $1"
    await eventually_async(lambda: fetch(postgres_url, status, TWO), [("sent",)])
    assert len(sms_service.to(TWO)) == 1
    assert len({p.key for p in sms_service.to(ONE)}) == 1, "level 1 repeated only with its key"


def sender_processes(daemon: Pagerd) -> list[str]:
    """The node's children: its sender processes, ready before READY."""
    assert daemon.process is not None
    pid = daemon.process.pid
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


async def eventually_async(
    read: Callable[[], Any], expected: object, *, timeout: float = 5.0
) -> None:
    """Poll the coroutine ``read()`` until it returns ``expected``."""
    deadline = time.monotonic() + timeout
    while (got := [tuple(r) for r in await read()]) != expected:
        assert time.monotonic() < deadline, f"{got} != {expected}"
        await asyncio.sleep(0.05)


async def test_no_alert_is_lost_or_recorded_twice_through_a_take_over(
    pair: Pair,
    broker: Mosquitto,
    sms_service: SmsStandIn,
    postgres_url: str,
) -> None:
    """Given 2,000 alerts over 200 services published at 500/s, when the active node is
    SIGKILLed one second in, then every alert is recorded once, each service's incident
    is paged once, and a page repeats only with its own key."""
    services = [f"svc-{i:03d}" for i in range(200)]
    a, b = pair([Policy("p", [(60.0, [sms(ONE)])])], dict.fromkeys(services, "p"))
    await start_pair(a, b)
    messages = [alert(services[i % len(services)], f"a-{i}", "pagerd") for i in range(2_000)]
    firehose = Firehose(broker.port, messages, rate=500)

    publishing = asyncio.create_task(firehose.run(timeout=60))
    await asyncio.sleep(1.0)  # the kill comes one second in, whatever state a is in
    a.kill()
    await publishing
    assert len(firehose.acked) == 2_000

    count = "SELECT count(*), count(DISTINCT alert_id) FROM alerts"
    await eventually_async(lambda: fetch(postgres_url, count), [(2_000, 2_000)], timeout=30)
    incidents = await fetch(postgres_url, "SELECT service_id, count(*) FROM incidents GROUP BY 1")
    assert sorted(tuple(r) for r in incidents) == [(s, 1) for s in services]
    await eventually(lambda: len(sms_service.distinct_keys()) == 200, timeout=10, what="pages")
    keys = await fetch(postgres_url, "SELECT id FROM outbox")
    assert sms_service.distinct_keys() == {r[0] for r in keys}
    repeated = Counter(p.key for p in sms_service.pages)
    assert len(sms_service.pages) - len(repeated) <= 200, "repeats are of pages in flight only"


async def test_a_paused_node_that_lost_its_lease_sends_and_commits_nothing_when_it_wakes(
    pair: Pair,
    monitor: Monitor,
    sms_service: SmsStandIn,
    postgres_url: str,
) -> None:
    """Given an incident at level 1 whose deadline falls while the active node is SIGSTOPped
    for 3 x lease_ttl_s, when the standby has taken over and the old node is SIGCONTed,
    then the old node sends no page and commits nothing, reports standby within 3 s, and
    does not take the MQTT session back: a new alert is paged once, by the new node."""
    a, b = pair([Policy("p", [(1.5, [sms(ONE)]), (60.0, [sms(TWO)])])], {"x": "p", "y": "p"})
    await start_pair(a, b)
    await monitor.publish("alert", "x", "down")
    await eventually(lambda: bool(sms_service.to(ONE)), what="level 1's page")
    sent = "SELECT status FROM outbox WHERE recipient = $1"
    await eventually_async(lambda: fetch(postgres_url, sent, ONE), [("sent",)])
    commits = await a.metric("pagerd_commit_seconds_count")

    a.pause()
    paused = time.monotonic()
    await role_of(b, "active", timeout=3 * TTL + 3)
    await eventually(lambda: bool(sms_service.to(TWO)), timeout=5, what="b's level 2")
    # The fault itself, not a wait for a condition: the pause lasts 3 x lease_ttl_s.
    await asyncio.sleep(max(0.0, paused + 3 * TTL - time.monotonic()))
    woke = time.monotonic()
    a.resume()

    assert await role_of(a, "standby", timeout=3) <= 3
    assert time.monotonic() - woke <= 3 + 0.5
    assert await a.metric("pagerd_commit_seconds_count") == commits, "a committed after waking"
    # /readyz reads the lease's own clock; the role gauge follows when the node steps
    # down, a moment later: within the same 3 s.
    while await a.metric('pagerd_role{role="standby"}') != 1:
        assert time.monotonic() - woke <= 3 + 0.5, "the role metric still says active"
        await asyncio.sleep(0.02)
    await monitor.publish("alert", "y", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 2, timeout=5, what="y's page, by b")
    await eventually_async(lambda: fetch(postgres_url, sent, TWO), [("sent",)])
    assert len(sms_service.to(TWO)) == 1, "level 2 was paged by b alone"
    assert len({p.key for p in sms_service.to(ONE)}) == 2
    assert len(sms_service.to(ONE)) == 2
    assert await b.readyz() == (200, {"role": "active"})
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a.base_url}/api/v1/services/x/ack", headers=AUTH) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
        async with http.get(f"{a.base_url}/api/v1/services/x", headers=AUTH) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
    assert body["incident"]["level"] == 2, "a standby reads the database"
