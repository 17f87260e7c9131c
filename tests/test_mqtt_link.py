"""The daemon's broker connection end to end: its status topic, and a broker cluster's
addresses tried in turn. pagerd runs as a process against real mosquittos."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.conftest import PagerdFactory
from tests.harness import Monitor, Mosquitto, Policy, SmsStandIn, eventually, free_port, sms

ONE = "+15550000001"
POLICY = Policy("oncall", [(30.0, [sms(ONE)])])


async def test_status_is_online_while_connected_and_offline_after_a_stop_or_a_crash(
    make_pagerd: PagerdFactory, monitor: Monitor
) -> None:
    """Given pagerd/status (retained), it reads online while pagerd is connected, and
    offline after a clean stop (published before the DISCONNECT, which drops the will)
    as after a SIGKILL (the will)."""
    daemon = make_pagerd([POLICY], {"api": "oncall"})
    await daemon.start()
    await eventually(lambda: monitor.on("status") == ["online"], what="online")

    assert await daemon.stop() == 0
    await eventually(lambda: monitor.on("status") == ["online", "offline"], what="offline")

    await daemon.start()
    await eventually(lambda: monitor.on("status")[-1] == "online", what="online again")
    daemon.kill()
    await eventually(
        lambda: monitor.on("status") == ["online", "offline", "online", "offline"],
        what="the will",
    )


@contextlib.asynccontextmanager
async def watching(broker: Mosquitto) -> AsyncIterator[Monitor]:
    watcher = Monitor(broker)
    async with watcher.connected():
        yield watcher


async def metric(base_url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics") as answer:
        text = await answer.text()
    samples = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(samples[0]) if samples else 0.0


async def test_the_hosts_of_a_cluster_are_tried_in_turn_on_each_connect(
    make_pagerd: PagerdFactory, broker: Mosquitto, sms_service: SmsStandIn, tmp_path: Path
) -> None:
    """Given [mqtt] hosts = [A, B] with nothing listening at A, pagerd connects to B; when
    B goes away and A comes up, it reconnects to A and takes alerts there."""
    other = Mosquitto(tmp_path / "other", port=free_port())
    other.directory.mkdir()
    hosts = [f"127.0.0.1:{other.port}", f"127.0.0.1:{broker.port}"]
    daemon = make_pagerd([POLICY], {"api": "oncall"}, mqtt={"hosts": hosts})
    await daemon.start()
    try:

        def subscribed_ports() -> list[int]:
            lines = daemon.log_events()
            return [line["port"] for line in lines if line.get("event") == "mqtt.subscribed"]

        assert subscribed_ports() == [broker.port]
        async with watching(broker) as monitor:
            await monitor.publish("alert", "api", "via B")
            await eventually(lambda: len(sms_service.to(ONE)) == 1, what="page via B")

        broker.stop()
        await other.start()
        await eventually(
            lambda: subscribed_ports() == [broker.port, other.port], timeout=10, what="A"
        )
        async with watching(other) as monitor:
            await monitor.publish("alert", "api2", "via A")
            await eventually(lambda: monitor.on("rejected") != [], what="an answer via A")
        lost = 'pagerd_mqtt_connection_failures_total{kind="lost"}'
        assert await metric(daemon.base_url, lost) >= 1
    finally:
        await daemon.stop()
        other.stop()
