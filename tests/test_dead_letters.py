"""Poison messages (CONTRACT §9, issue #13 point 9): an event that fails inside pagerd is
not redelivered for ever. After three failures, or at once when pagerd refuses it for a
reason of its own (a service without a policy), it is kept in the database, shown at
GET /api/v1/dead-letters, published on {prefix}/rejected, acknowledged and counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from pagerd.core.policy import Level, Policy, SmsTarget
from pagerd.core.records import PolicyRow, ServiceRow, WriteBatch
from pagerd.intake.dead_letters import FAILURES_BEFORE_DEAD, DeadLetters
from pagerd.intake.mqtt import MqttLink, MqttPublisher, MqttSettings
from pagerd.store.sqlite import Store
from pagerd.telemetry import metrics
from tests.assembly import assembled
from tests.conftest import PagerdFactory
from tests.harness import API_TOKEN, Monitor, Mosquitto, eventually, sms, sqlite_rows
from tests.harness import Policy as PolicyDecl

POLICY = Policy("p", (Level((SmsTarget("+15550000001"),), 600.0),))


@dataclass
class PoisonedStore:
    """The real store, failing like a bug inside pagerd on any write with a poison alert."""

    store: Store
    attempts: list[str] = field(default_factory=list)

    async def write(self, batch: WriteBatch) -> None:
        messages = [alert.message for _, alert in batch.alerts]
        self.attempts.extend(messages)
        if "poison" in messages:
            raise RuntimeError("injected fault")
        await self.store.write(batch)


def dead_letters_counted() -> float:
    sample = metrics.REGISTRY.get_sample_value("pagerd_dead_letters_total", {"source": "mqtt"})
    return sample or 0.0


@contextlib.asynccontextmanager
async def link_running(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[PoisonedStore]:
    """pagerd's MQTT intake in process, over the real broker, with a poisoned store."""
    store = await Store.open(tmp_path / "pagerd.db")
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=True),),
            services=(ServiceRow("api", "API", "p", managed=True),),
        )
    )
    poisoned = PoisonedStore(store)
    try:
        async with assembled(store, writer=poisoned) as assembly:
            settings = MqttSettings("127.0.0.1", broker.port, "pagerd-test", "pagerd")
            publisher = MqttPublisher("pagerd")
            dead_letters = DeadLetters(store, assembly.runtime.clock)
            link = MqttLink(settings, assembly.runtime, publisher, dead_letters)
            tasks = [asyncio.create_task(link.run()), asyncio.create_task(dead_letters.run())]
            try:
                await asyncio.wait_for(link.subscribed.wait(), 5)
                yield poisoned
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await store.close()


async def test_a_message_that_fails_inside_pagerd_three_times_is_dead_lettered(
    broker: Mosquitto, monitor: Monitor, tmp_path: Path
) -> None:
    """Given a message whose handling fails every time (an injected fault), then it is
    tried three times, then kept as a dead letter, rejected with its reason and
    acknowledged; the message after it is taken as usual."""
    counted = dead_letters_counted()
    async with link_running(broker, tmp_path) as poisoned:
        await monitor.publish("alert", "api", "poison")
        await monitor.publish("alert", "api", "down")
        db = tmp_path / "pagerd.db"
        rows = "SELECT topic, payload, reason FROM dead_letters"
        await eventually(lambda: sqlite_rows(db, rows) != [], timeout=10, what="a dead letter")
        await eventually(lambda: "down" in poisoned.attempts, what="the next message taken")
        # Rejected, then acknowledged, once kept: seen before this intake goes away.
        await eventually(lambda: bool(monitor.on("rejected")), what="the rejection")

    ((topic, payload, reason),) = sqlite_rows(db, rows)
    assert (topic, payload) == ("pagerd/alert/api", "poison")
    assert reason.startswith(f"failed {FAILURES_BEFORE_DEAD} times: internal error")
    # Each delivery is tried in its batch, then alone: three deliveries, not more.
    assert FAILURES_BEFORE_DEAD <= poisoned.attempts.count("poison") <= 2 * FAILURES_BEFORE_DEAD
    rejected = [r for r in monitor.on("rejected") if r["topic"] == "pagerd/alert/api"]
    assert [r["reason"].split(":")[0] for r in rejected] == ["dead-lettered"]
    assert dead_letters_counted() == counted + 1
    # Acknowledged: a new session of the same client gets nothing redelivered.
    async with link_running(broker, tmp_path / "again") as again:
        await asyncio.sleep(1.5)
    assert again.attempts == []


async def test_an_alert_for_a_service_without_a_policy_is_kept_as_a_dead_letter(
    make_pagerd: PagerdFactory, monitor: Monitor
) -> None:
    """Given a service whose policy is gone, when an alert comes, then it is kept as a dead
    letter at once (retrying cannot help), listed by the API, rejected and acknowledged."""
    daemon = make_pagerd([PolicyDecl("p", [(600.0, [sms("+15550000001")])])], {"api": "p"})
    await daemon.start()
    await daemon.stop()
    import sqlite3

    with contextlib.closing(sqlite3.connect(daemon.db)) as conn, conn:
        conn.execute(
            "INSERT INTO services (id, name, policy_id, managed)"
            " VALUES ('orphan', 'Orphan', 'gone', 0)"
        )
    await daemon.start()

    await monitor.publish("alert", "orphan", json.dumps({"message": "disk full"}))
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def listed() -> list[dict[str, str]]:
            async with http.get(f"{daemon.base_url}/api/v1/dead-letters") as response:
                assert response.status == 200
                body = await response.json()
                return list(body["dead_letters"])

        letters: list[dict[str, str]] = []
        for _ in range(100):
            letters = await listed()
            if letters:
                break
            await asyncio.sleep(0.05)
    (letter,) = letters
    assert letter["topic"] == "pagerd/alert/orphan"
    assert letter["reason"] == "service 'orphan' has no policy 'gone'"
    assert json.loads(letter["payload"]) == {"message": "disk full"}
    await eventually(lambda: bool(monitor.on("rejected")), what="rejected")
    assert monitor.on("rejected")[0]["reason"].startswith("dead-lettered: service 'orphan'")
    await daemon.stop()
    await daemon.start()  # acknowledged: not redelivered, not kept twice
    await asyncio.sleep(1.0)
    assert sqlite_rows(daemon.db, "SELECT count(*) FROM dead_letters") == [(1,)]
