"""Crashes, restarts and broker outages: nothing lost, nobody paged twice."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter

import aiohttp
import aiomqtt
import pytest

from pagerd.runtime.router import FULL_AT
from tests.conftest import PagerdFactory
from tests.harness import Monitor, Mosquitto, Policy, SmsStandIn, eventually, sms, sqlite_rows
from tests.mqtt_wire import publish_all, publish_packet

ONE = "+15550000001"
TWO = "+15550000002"


def count(daemon_db: object, sql: str) -> int:
    return int(sqlite_rows(daemon_db, sql)[0][0])  # type: ignore[arg-type]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_restart_mid_escalation_pages_next_level_at_the_original_deadline(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn, how: signal.Signals
) -> None:
    """Given level 1 paged with a 3 s timeout, when pagerd is stopped and started again
    before the deadline, then level 2 is paged at the original deadline, once."""
    timeout = 3.0
    daemon = make_pagerd([Policy("p", [(timeout, [sms(ONE)]), (timeout, [sms(TWO)])])], {"a": "p"})
    await daemon.start()
    await monitor.publish("alert", "a", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")
    paged_at = sms_service.to(ONE)[0].at
    await eventually(
        lambda: count(daemon.db, "SELECT count(*) FROM outbox WHERE status='sent'") == 1,
        what="level 1 marked sent",
    )

    if how == signal.SIGKILL:
        daemon.kill()
    else:
        assert await daemon.stop() == 0
    await daemon.start()

    await eventually(lambda: len(sms_service.to(TWO)) == 1, timeout=timeout + 2, what="level 2")
    lateness = sms_service.to(TWO)[0].at - (paged_at + timeout)
    assert -0.3 <= lateness <= 0.3, f"level 2 paged {lateness:+.3f}s from its deadline"
    await asyncio.sleep(0.5)
    assert len(sms_service.to(ONE)) == 1
    assert len(sms_service.to(TWO)) == 1


async def test_overdue_timer_fires_at_once_after_start(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given pagerd down past an ack deadline, when it starts, then the next level is paged
    at once."""
    timeout = 0.5
    daemon = make_pagerd([Policy("p", [(timeout, [sms(ONE)]), (timeout, [sms(TWO)])])], {"a": "p"})
    await daemon.start()
    await monitor.publish("alert", "a", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")
    daemon.kill()
    await asyncio.sleep(timeout * 2)  # pagerd is down while the deadline passes
    assert sms_service.to(TWO) == []

    await daemon.start()
    ready_at = time.monotonic()
    await eventually(lambda: len(sms_service.to(TWO)) == 1, timeout=2, what="overdue level 2")
    assert sms_service.to(TWO)[0].at - ready_at < 0.5


async def test_sigkill_under_load_loses_no_alert_and_pages_no_step_twice(
    make_pagerd: PagerdFactory, broker: Mosquitto, sms_service: SmsStandIn
) -> None:
    """Given 2,000 alerts over 500 services in flight, when pagerd is SIGKILLed at a random
    moment and restarted, then every alert is recorded exactly once, each service has one
    incident, and no target was paged twice for the same step (a send cut off by the kill
    may repeat, but only with the same Idempotency-Key)."""
    services = [f"svc-{i}" for i in range(500)]
    daemon = make_pagerd(
        [Policy("p", [(60.0, [sms(ONE)])])], dict.fromkeys(services, "p"), fallback_policy=""
    )
    await daemon.start()

    alerts = [(services[i % 500], f"alert-{i}") for i in range(2000)]
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="load") as client:

        async def publish_all() -> None:
            for start in range(0, len(alerts), 100):
                await asyncio.gather(
                    *(
                        client.publish(
                            f"pagerd/alert/{service}",
                            f'{{"message": "load", "alert_id": "{alert_id}"}}'.encode(),
                            qos=1,
                        )
                        for service, alert_id in alerts[start : start + 100]
                    )
                )

        publishing = asyncio.create_task(publish_all())
        await asyncio.sleep(random.uniform(0.05, 0.6))
        daemon.kill()
        await publishing

    await daemon.start()
    await eventually(
        lambda: count(daemon.db, "SELECT count(*) FROM alerts") >= 2000,
        timeout=30,
        what="all alerts recorded",
    )
    await eventually(lambda: len(sms_service.distinct_keys()) == 500, timeout=10, what="pages")
    await asyncio.sleep(0.5)  # let any page that would be a duplicate arrive

    assert count(daemon.db, "SELECT count(DISTINCT alert_id) FROM alerts") == 2000
    assert count(daemon.db, "SELECT count(*) FROM alerts") == 2000
    per_service = sqlite_rows(daemon.db, "SELECT service_id, count(*) FROM incidents GROUP BY 1")
    assert len(per_service) == 500
    assert {n for _, n in per_service} == {1}
    repeats = Counter(page.key for page in sms_service.pages)
    duplicated = {key: n for key, n in repeats.items() if n > 1}
    print(f"pages: {len(sms_service.pages)}, distinct keys: {len(repeats)}, repeated: {duplicated}")
    # One page per incident's step 0; a repeat is only ever the same notification again.
    assert len(repeats) == 500
    assert all(key.endswith("-0-0") for key in repeats)


async def test_broker_restart_reconnects_and_processes_what_was_published_meanwhile(
    make_pagerd: PagerdFactory, broker: Mosquitto, sms_service: SmsStandIn
) -> None:
    """Given pagerd connected, when the broker restarts and an alert is published before pagerd
    is back, then pagerd reconnects within 5 s and pages for that alert."""
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONE)])])], {"a": "p"})
    await daemon.start()
    broker.stop()
    await broker.start()
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="monitor") as client:
        await client.publish("pagerd/alert/a", b"down while away", qos=1)
        restarted = time.monotonic()
        await client.subscribe("pagerd/status", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                if message.payload == b"online":
                    break
    print(f"reconnected {time.monotonic() - restarted:.2f}s after the broker came back")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, timeout=5, what="page after reconnect")
    assert "down while away" in sms_service.to(ONE)[0].message


async def test_sigterm_with_full_mailboxes_drains_and_exits_zero(
    make_pagerd: PagerdFactory, broker: Mosquitto, sms_service: SmsStandIn
) -> None:
    """Given alerts still pouring in, when SIGTERM comes, then pagerd commits what it
    accepted, exits 0 within TimeoutStopSec (30 s), and after a restart nothing is missing."""
    services = [f"svc-{i}" for i in range(200)]
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONE)])])], dict.fromkeys(services, "p"))
    await daemon.start()
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="load") as client:

        async def publish_all() -> None:
            for start in range(0, 3000, 50):
                await asyncio.gather(
                    *(
                        client.publish(
                            f"pagerd/alert/{services[i % 200]}",
                            f'{{"message": "m", "alert_id": "a{i}"}}'.encode(),
                            qos=1,
                        )
                        for i in range(start, start + 50)
                    )
                )

        publishing = asyncio.create_task(publish_all())
        await eventually(
            lambda: count(daemon.db, "SELECT count(*) FROM alerts") >= 200,
            what="intake under way",
        )
        started = time.monotonic()
        assert await daemon.stop(signal.SIGTERM, timeout=30) == 0
        stopped_in = time.monotonic() - started
        await publishing
    print(f"stopped in {stopped_in:.2f}s")
    log = [e["event"] for e in daemon.log_events()]
    assert "pagerd.stopped" in log
    assert "pagerd.drain_timeout" not in log
    assert count(daemon.db, "SELECT count(*) FROM alerts") < 3000, "SIGTERM came too late"

    await daemon.start()
    await eventually(
        lambda: count(daemon.db, "SELECT count(*) FROM alerts") == 3000,
        timeout=30,
        what="every alert recorded after restart",
    )
    assert count(daemon.db, "SELECT count(*) FROM incidents") == 200


async def test_a_backlog_beyond_the_mailbox_bound_is_taken_in_pauses_and_all_recorded(
    make_pagerd: PagerdFactory, broker: Mosquitto, sms_service: SmsStandIn
) -> None:
    """Given more alerts queued for pagerd's session than its mailboxes hold (FULL_AT),
    when pagerd starts, then it pauses reading the broker at least once, and in the end
    every alert is recorded once and each service paged once."""
    # Well beyond (how far the mailboxes fill is a race with the commits), and within the
    # 65,535 packet ids of one publishing session.
    total = min(2 * FULL_AT, 65_000)
    services = [f"svc-{i}" for i in range(100)]
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONE)])])], dict.fromkeys(services, "p"))
    await daemon.start()  # makes the persistent session
    assert await daemon.stop() == 0
    body = b'{"message": "m", "alert_id": "a%d"}'
    packets = [  # packet ids 1.., fewer than 65,535
        publish_packet(f"pagerd/alert/{services[i % 100]}", body % i, i + 1) for i in range(total)
    ]
    await publish_all(broker.port, "load", packets)

    await daemon.start()
    await eventually(
        lambda: count(daemon.db, "SELECT count(*) FROM alerts") == total,
        timeout=60,
        what="the whole backlog recorded",
    )
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.base_url}/metrics") as answer:
        text = await answer.text()
    (pauses,) = [
        line for line in text.splitlines() if line.startswith("pagerd_mqtt_intake_pauses_total")
    ]
    assert float(pauses.split()[-1]) >= 1
    assert count(daemon.db, "SELECT count(DISTINCT alert_id) FROM alerts") == total
    await eventually(lambda: len(sms_service.distinct_keys()) == 100, what="one page each")
