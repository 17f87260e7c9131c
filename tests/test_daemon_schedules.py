"""CONTRACT §8 end to end: pagerd as a process, a real mosquitto, the SMS stand-in, the API
over HTTP. Schedules page whoever is on call, maintenance windows suppress, heartbeats
that stop are an alert, and all of it survives a SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import aiomqtt

from tests.conftest import PagerdFactory
from tests.harness import (
    Monitor,
    Mosquitto,
    Pagerd,
    Policy,
    SmsStandIn,
    eventually,
    sms,
    sqlite_rows,
)
from tests.test_cli import EXIT_OK, pagerd_async

ALICE, BOB, ONE = "+15550000101", "+15550000102", "+15550000001"
TEAM = {"claims": [("alice", ALICE), ("bob", BOB)]}


async def api(daemon: Pagerd, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON answer) of a call to the daemon's ``/api/v1{path}``."""
    config = tomllib.loads((daemon.directory / "pagerd.toml").read_text())
    headers = {"Authorization": f"Bearer {config['http']['tokens'][0]}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.request(method, f"{daemon.base_url}/api/v1{path}", json=body) as response,
    ):
        return response.status, await response.json(
            content_type=None
        ) if response.status != 204 else None


@contextlib.asynccontextmanager
async def on_call_topic(broker: Mosquitto, schedule_id: str) -> AsyncIterator[list[Any]]:
    """The payloads pagerd publishes, retained, on ``pagerd/oncall/{schedule_id}``."""
    seen: list[Any] = []

    async def listen(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            seen.append(json.loads(payload) if payload else None)

    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(f"pagerd/oncall/{schedule_id}", qos=1)
        task = asyncio.create_task(listen(client))
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- schedules --------------------------------------------------------------------------------


async def test_an_alert_pages_the_developer_on_call_and_after_a_handover_the_next_level_the_new_one(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn, broker: Mosquitto
) -> None:
    daemon = make_pagerd([], {}, teams=TEAM)
    await daemon.start()
    _, teams = await api(daemon, "GET", "/teams")
    claims = next(t for t in teams["teams"] if t["team"]["name"] == "claims")
    alice, bob = (d["id"] for d in claims["developers"])
    # Hourly turns, alice's ending 4 s from now: bob's begins then.
    handover = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    start = (handover - timedelta(hours=1)).replace(tzinfo=None)
    schedule = {
        "team_id": claims["team"]["id"],
        "time_zone": "UTC",
        "rotations": [{"start": start.isoformat(), "shift_s": 3600, "developer_ids": [alice, bob]}],
    }
    async with on_call_topic(broker, "rota") as announced:
        assert (await api(daemon, "PUT", "/schedules/rota", schedule))[0] == 201
        # Level 1's timeout ends after the hand-over; level 2 pages whoever is on call then.
        target = {"type": "schedule", "schedule": "rota"}
        levels = [
            {"ack_timeout_s": 6, "targets": [target]},
            {"ack_timeout_s": 60, "targets": [target]},
        ]
        assert (await api(daemon, "PUT", "/policies/follow", {"levels": levels}))[0] == 201
        assert (await api(daemon, "PUT", "/services/checkout", {"policy_id": "follow"}))[0] == 201

        await monitor.publish("alert", "checkout", "checkout is down")
        await eventually(lambda: len(sms_service.to(ALICE)) == 1, what="level 1 page to alice")
        assert datetime.now(UTC) < handover, "the machine was too slow for this test's timing"
        assert sms_service.to(BOB) == []

        await eventually(lambda: len(sms_service.to(BOB)) == 1, timeout=15, what="level 2 to bob")
        assert "L2" in sms_service.to(BOB)[0].message
        assert len(sms_service.to(ALICE)) == 1
        await eventually(lambda: len(announced) >= 2, what="the hand-over announced")
    assert announced[0]["developer_id"] == alice
    assert announced[0]["name"] == "alice"
    assert announced[0]["until"] == handover.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert announced[-1]["developer_id"] == bob


# --- maintenance ----------------------------------------------------------------------------


async def test_100_alerts_in_a_window_open_nothing_and_the_first_after_it_pages_at_once(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    daemon = make_pagerd([Policy("oncall", [(30.0, [sms(ONE)])])], {"api": "oncall"})
    await daemon.start()
    config = daemon.directory / "pagerd.toml"
    run = await pagerd_async(
        "maintenance",
        "api",
        "--for",
        "8s",
        "--reason",
        "deploy",
        "--config",
        config,
        cwd=daemon.directory,
    )
    assert run.code == EXIT_OK, run.err
    assert run.out.startswith("api: in maintenance until ")
    _, service = await api(daemon, "GET", "/services/api")
    assert service["maintenance"]["reason"] == "deploy"
    ends = datetime.fromisoformat(service["maintenance"]["until"])

    for n in range(100):
        await monitor.publish("alert", "api", {"message": f"deploying {n}"})

    async def recorded() -> list[dict[str, Any]]:
        _, page = await api(daemon, "GET", "/services/api/alerts?limit=1000")
        return list(page["alerts"])

    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(alerts) < 100 and time.monotonic() < deadline:
        alerts = await recorded()
        await asyncio.sleep(0.05)
    assert len(alerts) == 100
    assert all(a["suppressed"] and a["incident_id"] is None for a in alerts)
    assert datetime.now(UTC) < ends, "the machine was too slow for this test's timing"
    assert sqlite_rows(daemon.db, "SELECT count(*) FROM incidents") == [(0,)]
    assert sms_service.pages == []

    # The window ends by its timer: the service shows it, and the next alert pages at once.
    async def in_maintenance() -> bool:
        return (await api(daemon, "GET", "/services/api"))[1]["maintenance"] is not None

    while await in_maintenance():
        assert datetime.now(UTC) < ends + timedelta(seconds=5), "the window did not end"
        await asyncio.sleep(0.05)
    sent = time.monotonic()
    await monitor.publish("alert", "api", {"message": "after the deploy"})
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="the page after the window")
    assert sms_service.to(ONE)[0].at - sent < 2.0
    assert "after the deploy" in sms_service.to(ONE)[0].message


# --- heartbeats -------------------------------------------------------------------------------


async def beat(monitor: Monitor, service: str, every: float, until: float) -> float:
    """Beat every ``every`` s until monotonic ``until``; the time of the last beat."""
    last = time.monotonic()
    while time.monotonic() < until:
        await monitor.publish("heartbeat", service, b"")
        last = time.monotonic()
        await asyncio.sleep(every)
    return last


async def watched_daemon(make_pagerd: PagerdFactory, heartbeat_s: float) -> Pagerd:
    daemon = make_pagerd([Policy("oncall", [(60.0, [sms(ONE)])])], {})
    await daemon.start()
    body = {"policy_id": "oncall", "heartbeat_s": heartbeat_s}
    assert (await api(daemon, "PUT", "/services/cron", body))[0] == 201
    return daemon


async def test_a_silent_monitor_is_one_alert_within_2_s_and_its_next_beat_resolves_it(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    daemon = await watched_daemon(make_pagerd, heartbeat_s=1.0)
    last = await beat(monitor, "cron", every=0.3, until=time.monotonic() + 3)
    assert sms_service.pages == []  # three seconds of beats: no alert

    await eventually(
        lambda: len(sms_service.to(ONE)) == 1, timeout=5, what="the missed beat's page"
    )
    assert sms_service.to(ONE)[0].at - last < 2.0
    assert "no heartbeat for 1 s" in sms_service.to(ONE)[0].message
    await asyncio.sleep(2.5)  # still silent: no second alert
    assert len(sms_service.to(ONE)) == 1
    assert sqlite_rows(daemon.db, "SELECT status FROM incidents") == [("triggered",)]

    await monitor.publish("heartbeat", "cron", b"back")
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT status FROM incidents") == [("resolved",)],
        what="the incident resolved by the next beat",
    )
    await eventually(lambda: any(s["health"] == "healthy" for s in monitor.on("state/cron")[1:]))


async def test_sigkill_after_the_alert_leaves_the_incident_open_not_raised_twice(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    daemon = await watched_daemon(make_pagerd, heartbeat_s=1.0)
    await beat(monitor, "cron", every=0.3, until=time.monotonic() + 1)
    await eventually(
        lambda: len(sms_service.to(ONE)) == 1, timeout=5, what="the missed beat's page"
    )
    daemon.kill()
    await daemon.start()
    await asyncio.sleep(3)  # three intervals of silence after the restart
    assert sqlite_rows(daemon.db, "SELECT status FROM incidents") == [("triggered",)]
    # The page may be sent again (same Idempotency-Key) if its outcome was not committed.
    assert len({p.key for p in sms_service.to(ONE)}) == 1

    await monitor.publish("heartbeat", "cron", b"")
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT status FROM incidents") == [("resolved",)],
        what="the incident resolved by the next beat",
    )


async def test_sigkill_before_the_deadline_raises_the_alert_once_after_a_full_interval(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    daemon = await watched_daemon(make_pagerd, heartbeat_s=2.0)
    await beat(monitor, "cron", every=0.3, until=time.monotonic() + 1)
    daemon.kill()  # the deadline, at most 2 s away, has not passed: nothing was raised
    assert sqlite_rows(daemon.db, "SELECT count(*) FROM incidents") == [(0,)]
    await daemon.start()
    started = time.monotonic()
    await eventually(
        lambda: len(sms_service.to(ONE)) == 1, timeout=8, what="the alert after the restart"
    )
    assert (
        sms_service.to(ONE)[0].at - started >= 1.5
    )  # a full interval after start-up, less its READY
    await asyncio.sleep(2.5)
    assert len(sms_service.to(ONE)) == 1
    assert sqlite_rows(daemon.db, "SELECT count(*), min(message) FROM incidents") == [
        (1, "no heartbeat for 2 s")
    ]


async def test_a_beat_for_a_service_without_heartbeat_s_is_rejected_on_mqtt(
    make_pagerd: PagerdFactory, monitor: Monitor
) -> None:
    daemon = make_pagerd([Policy("oncall", [(60.0, [sms(ONE)])])], {"api": "oncall"})
    await daemon.start()
    await monitor.publish("heartbeat", "api", b"\xff\xfe not even text")
    await eventually(lambda: len(monitor.on("rejected")) == 1, what="the rejection")
    [rejected] = monitor.on("rejected")
    assert rejected["topic"] == "pagerd/heartbeat/api"
    assert rejected["reason"] == "service 'api' expects no heartbeat: it has no heartbeat_s"
    assert daemon.process is not None
