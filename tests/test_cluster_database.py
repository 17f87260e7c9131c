"""Two pagerd nodes when PostgreSQL fails (CONTRACT §7): restarted under load, nothing is
lost and intake goes on; unreachable, no node acts, and readiness says why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.conftest import PagerdFactory
from tests.faults.firehose import Firehose, alert
from tests.harness import Monitor, Mosquitto, Pagerd, Policy, SmsStandIn, eventually, sms
from tests.netproxy import TcpProxy
from tests.postgres import PostgresCluster
from tests.test_cluster import TTL, eventually_async, fetch, node, role_of

ONE = "+15550000001"

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL of this test's own, to restart: the session's serves the other tests."""
    cluster = PostgresCluster(settings={"fsync": "off", "full_page_writes": "off"})
    cluster.start()
    cluster.psql("CREATE DATABASE pagerd TEMPLATE template0")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test's database, to cut off."""
    port = int(postgres_url.rsplit(":", 1)[1].split("/", 1)[0])
    forwarding = TcpProxy(port)
    await forwarding.start()
    yield forwarding
    await forwarding.stop()


def two_nodes(
    make_pagerd: PagerdFactory, url: str, services: list[str], **options: Any
) -> tuple[Pagerd, Pagerd]:
    policy = Policy("p", [(60.0, [sms(ONE)])])
    a, b = (
        make_pagerd([policy], dict.fromkeys(services, "p"), database_url=url, cluster=node(n))
        for n in ("a", "b")
    )
    return a, b


async def test_postgresql_restarted_under_load_loses_nothing_and_intake_goes_on(
    own_cluster: PostgresCluster,
    make_pagerd: PagerdFactory,
    broker: Mosquitto,
    sms_service: SmsStandIn,
) -> None:
    """Given two nodes and 1,500 alerts over 100 services published at 300/s, when
    PostgreSQL is restarted (its sessions ended) a second in, then every alert is recorded
    once and each service's incident is paged once (a repeat only with its own key)."""
    url = own_cluster.url("pagerd")
    services = [f"svc-{i:03d}" for i in range(100)]
    a, b = two_nodes(make_pagerd, url, services)
    await a.start()
    await b.start()
    messages = [alert(services[i % len(services)], f"a-{i}") for i in range(1_500)]
    firehose = Firehose(broker.port, messages, rate=300)

    publishing = asyncio.create_task(firehose.run(timeout=60))
    await asyncio.sleep(1.0)  # the fault comes one second in, whatever the nodes are doing
    await asyncio.to_thread(own_cluster.restart)
    await publishing

    count = "SELECT count(*), count(DISTINCT alert_id) FROM alerts"
    await eventually_async(lambda: fetch(url, count), [(1_500, 1_500)], timeout=30)
    incidents = await fetch(url, "SELECT service_id, count(*) FROM incidents GROUP BY 1")
    assert sorted(tuple(r) for r in incidents) == [(s, 1) for s in services]
    await eventually(lambda: len(sms_service.distinct_keys()) == 100, timeout=10, what="pages")
    assert sms_service.distinct_keys() == {r[0] for r in await fetch(url, "SELECT id FROM outbox")}
    assert {await a.role(), await b.role()} == {"active", "standby"}
    await stop_before_the_database(a, b)


async def stop_before_the_database(*daemons: Pagerd) -> None:
    for daemon in daemons:
        assert await daemon.stop() == 0


async def test_no_node_acts_while_the_database_is_unreachable_and_readiness_says_why(
    proxy: TcpProxy,
    postgres_url: str,
    make_pagerd: PagerdFactory,
    monitor: Monitor,
    sms_service: SmsStandIn,
) -> None:
    """Given two nodes reaching PostgreSQL through a link that then drops everything,
    then the active node stops acting within lease_ttl_s and both say standby, naming the
    database; an alert published meanwhile pages nobody; once the link is back, one node
    takes over and pages it once."""
    url = postgres_url.replace(f":{proxy.target}/", f":{proxy.port}/")
    a, b = two_nodes(make_pagerd, url, ["svc"])
    await a.start()
    await b.start()

    proxy.blackhole()
    await role_of(a, "standby", timeout=TTL + 2)
    await monitor.publish("alert", "svc", "down")
    for daemon in (a, b):
        await eventually_database_reason(daemon)
    quiet_until = time.monotonic() + 3 * TTL
    while time.monotonic() < quiet_until:  # the outage lasts: nobody acts through it
        assert [await a.role(), await b.role()] == ["standby", "standby"]
        assert sms_service.pages == []
        await asyncio.sleep(0.1)

    proxy.heal()
    await eventually(lambda: bool(sms_service.pages), timeout=TTL + 10, what="the alert's page")
    assert {await a.role(), await b.role()} == {"active", "standby"}
    assert len(sms_service.distinct_keys()) == 1
    await stop_before_the_database(a, b)


async def eventually_database_reason(daemon: Pagerd, timeout: float = 10.0) -> None:
    """Wait until ``daemon``'s /readyz is a standby's 503 whose reason names the database."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await daemon.readyz()
        if status == 503 and body.get("role") == "standby" and "database" in body.get("reason", ""):
            return
        assert time.monotonic() < deadline, f"{daemon.cluster}: {status} {body}"
        await asyncio.sleep(0.05)
