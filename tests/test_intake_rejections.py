"""CONTRACT §3 bad input end to end: every refused MQTT message is answered on
``{prefix}/rejected``, logged, acknowledged so it is never redelivered, and leaves
the daemon running and its state untouched."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

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
from tests.mqtt_wire import publish_all, publish_packet

ONE = "+15550000001"
POLICY = Policy("oncall", [(30.0, [sms(ONE)])])


async def quiet(seconds: float = 0.5) -> None:
    """Let time pass when a test asserts that something does NOT happen.

    Absence cannot be polled for; by then a redelivered message would have been
    answered many times over (a rejection takes milliseconds).
    """
    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Bad:
    """One message pagerd must refuse, and a pattern its ``reason`` must match."""

    kind: str
    service: str
    payload: bytes
    says: str

    @property
    def topic(self) -> str:
        return f"pagerd/{self.kind}/{self.service}"


def text(value: str) -> bytes:
    return value.encode()


def body(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


# Wrong prefixes, extra levels and unknown kinds never reach pagerd: the broker
# only delivers what matches its subscriptions (pagerd/{alert,ack,healthy}/+).
BAD_MESSAGES = [
    Bad("alert", "bad$id", text("down"), r"service id .*\[A-Za-z0-9\._-\]\{1,128\}"),
    Bad("alert", "s" * 129, text("down"), r"service id"),
    Bad("alert", "api", b"x" * (64 * 1024 + 1), r"65537 bytes .*65536"),
    Bad("alert", "api", b"\xff\xfe down", r"not UTF-8"),
    Bad("alert", "api", text('{"message": "down"'), r"malformed JSON"),
    Bad("alert", "api", text("[1]"), r"object"),
    Bad("alert", "api", body({"alert_id": "a1"}), r"message"),
    Bad("alert", "api", body({"message": 5}), r"message"),
    Bad("alert", "api", body({"message": "m" * 1025}), r"message.*1024"),
    Bad("alert", "api", body({"message": ""}), r"message"),
    Bad("alert", "api", body({"message": "m", "alert_id": "i" * 256}), r"alert_id.*255"),
    Bad("ack", "api", text("alice"), r"malformed JSON"),
    Bad("ack", "api", body({"incident_id": 1}), r"incident_id"),
    Bad("healthy", "api", body({"status": "ok"}), r"unknown field `status`"),
    Bad("alert", "nosuch", text("down"), r"unknown service 'nosuch'"),
    Bad("ack", "nosuch", b"", r"unknown service 'nosuch'"),
    Bad("healthy", "nosuch", b"", r"unknown service 'nosuch'"),
]


def rejections_logged(daemon: Pagerd) -> list[dict[str, Any]]:
    return [line for line in daemon.log_events() if line.get("event") == "mqtt.rejected"]


def row_counts(daemon: Pagerd) -> dict[str, int]:
    tables = ("incidents", "alerts", "outbox", "timeline")
    return {t: sqlite_rows(daemon.db, f"SELECT count(*) FROM {t}")[0][0] for t in tables}


async def reject(monitor: Monitor, bad: Bad) -> dict[str, Any]:
    """Publish ``bad`` and return pagerd's answer on the rejected topic."""
    before = len(monitor.on("rejected"))
    await monitor.publish(bad.kind, bad.service, bad.payload)
    await eventually(lambda: len(monitor.on("rejected")) > before, what=f"rejection of {bad.topic}")
    answers = monitor.on("rejected")[before:]
    assert len(answers) == 1, answers
    answer: dict[str, Any] = answers[0]
    return answer


async def test_each_kind_of_bad_message_is_rejected_and_changes_nothing(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a running daemon, when each kind of bad message arrives, then each is answered on
    pagerd/rejected and logged, nothing is stored or paged, and a valid alert still pages."""
    daemon = make_pagerd([POLICY], {"api": "oncall"})
    await daemon.start()
    empty = row_counts(daemon)

    for bad in BAD_MESSAGES:
        answer = await reject(monitor, bad)
        assert answer["topic"] == bad.topic
        assert re.search(bad.says, answer["reason"]), (bad, answer["reason"])
        if len(bad.payload) > 64 * 1024:  # CONTRACT §9: never held, so only its size is told
            assert set(answer) == {"topic", "reason", "payload", "size"}, answer
            assert (answer["payload"], answer["size"]) == ("", len(bad.payload))
        else:
            assert set(answer) == {"topic", "reason", "payload"}, answer
            assert answer["payload"] == bad.payload[:1024].decode("utf-8", "replace"), bad
        assert daemon.process is not None
        assert daemon.process.poll() is None, f"pagerd died on {bad}:\n{daemon.tail()}"

    logged = rejections_logged(daemon)
    assert [line["topic"] for line in logged] == [bad.topic for bad in BAD_MESSAGES]
    assert all(line["reason"] and line["level"] == "warning" for line in logged)
    assert row_counts(daemon) == empty
    assert sqlite_rows(daemon.db, "SELECT id FROM services") == [("api",)]
    assert sms_service.pages == []

    await monitor.publish("alert", "api", {"message": "real trouble"})
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="page for a valid alert")
    assert "real trouble" in sms_service.pages[0].message
    assert sqlite_rows(daemon.db, "SELECT count(*) FROM incidents") == [(1,)]
    assert sqlite_rows(daemon.db, "SELECT count(*) FROM alerts") == [(1,)]


async def test_rejected_payload_is_cut_to_1_kib(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given 2 KiB payloads that are refused, then the echoed payload is their first 1 KiB."""
    daemon = make_pagerd([POLICY], {"api": "oncall"})
    await daemon.start()

    malformed = "{" + "x" * 2047
    answer = await reject(monitor, Bad("alert", "api", malformed.encode(), "malformed"))
    assert answer["payload"] == malformed[:1024]

    not_utf8 = b"\xff" + b"y" * 2047
    answer = await reject(monitor, Bad("alert", "api", not_utf8, "UTF-8"))
    assert len(answer["payload"]) <= 1024
    assert answer["payload"] == "\ufffd" + "y" * 1023

    # Cut inside a two-byte character: still a valid string, no longer than 1 KiB.
    split = ("a" + "\u00e9" * 1024).encode()  # byte 1023 is the first half of an é
    answer = await reject(monitor, Bad("ack", "api", split, "malformed"))
    assert len(answer["payload"]) <= 1024
    assert answer["payload"].startswith("a\u00e9\u00e9")
    assert sms_service.pages == []


async def test_rejected_message_is_acknowledged_and_not_redelivered(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a rejected message, when pagerd restarts on the same broker session,
    then the broker does not deliver it again."""
    daemon = make_pagerd([POLICY], {"api": "oncall"})
    await daemon.start()
    await reject(monitor, Bad("alert", "api", b"\xff bad", "UTF-8"))
    await reject(monitor, Bad("alert", "nosuch", b"down", "unknown service"))
    assert await daemon.stop() == 0

    await daemon.start()
    # Anything left unacknowledged is redelivered first, ahead of this alert.
    await monitor.publish("alert", "api", "after restart")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="page after restart")
    await quiet()
    assert len(monitor.on("rejected")) == 2
    assert len(rejections_logged(daemon)) == 2  # the log spans both runs


async def test_fallback_policy_registers_an_unknown_service_and_pages(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given [routing] fallback_policy, when an alert names an unknown service,
    then the service is registered with that policy and its level 1 is paged."""
    daemon = make_pagerd([POLICY], {}, fallback_policy="oncall")
    await daemon.start()

    await monitor.publish("alert", "newcomer", "first words")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="page for the new service")
    assert "first words" in sms_service.pages[0].message
    assert sqlite_rows(daemon.db, "SELECT id, policy_id FROM services") == [("newcomer", "oncall")]
    assert sqlite_rows(daemon.db, "SELECT service_id, status FROM incidents") == [
        ("newcomer", "triggered")
    ]
    assert monitor.on("rejected") == []

    # Only an alert registers a service: an ack or healthy for a stranger is refused,
    # and the reason does not claim there is no fallback policy.
    for kind in ("ack", "healthy"):
        answer = await reject(monitor, Bad(kind, "stranger", b"", "unknown service"))
        assert "unknown service 'stranger'" in answer["reason"]
        assert "no [routing] fallback_policy" not in answer["reason"], answer["reason"]
    assert sqlite_rows(daemon.db, "SELECT id FROM services") == [("newcomer",)]


def peak_rss_bytes(daemon: Pagerd) -> int:
    """The most memory pagerd's process has held so far (VmHWM)."""
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    (kib,) = re.findall(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    return int(kib) * 1024


async def metric(daemon: Pagerd, name: str) -> float:
    """One sample of pagerd's /metrics, 0 if absent."""
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.base_url}/metrics") as answer:
        text = await answer.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_a_50_mb_message_is_refused_with_its_size_and_never_held(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn, broker: Mosquitto
) -> None:
    """CONTRACT §9: given [mqtt] max_message_bytes (64 KiB by default), when a 50 MB alert
    comes through the broker, then pagerd refuses it on pagerd/rejected with its size,
    logs and counts it, acknowledges it, and its memory does not grow by the message."""
    daemon = make_pagerd([POLICY], {"api": "oncall"})
    await daemon.start()
    before = peak_rss_bytes(daemon)
    size = 50_000_000

    await publish_all(broker.port, "big", [publish_packet("pagerd/alert/api", b"x" * size, 1)])
    await eventually(lambda: len(monitor.on("rejected")) == 1, timeout=30, what="the refusal")

    assert monitor.on("rejected") == [
        {
            "topic": "pagerd/alert/api",
            "reason": f"payload of {size} bytes is over 65536",
            "payload": "",
            "size": size,
        }
    ]
    grown = peak_rss_bytes(daemon) - before
    assert grown < 16 * 1024 * 1024, f"pagerd's peak memory grew by {grown:,} bytes"
    (logged,) = rejections_logged(daemon)
    assert (logged["topic"], logged["size"]) == ("pagerd/alert/api", size)
    counted = 'pagerd_alerts_rejected_total{reason="too_large",source="mqtt"}'
    assert await metric(daemon, counted) == 1.0

    # Acknowledged: after a restart, a new alert's page shows nothing came before it.
    assert await daemon.stop() == 0
    await daemon.start()
    await monitor.publish("alert", "api", "after restart")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="page after restart")
    assert len(monitor.on("rejected")) == 1


async def test_the_size_limit_is_the_configured_one(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given [mqtt] max_message_bytes = 1024, a payload of 1024 bytes is an alert and one
    of 1025 bytes is refused for its size."""
    daemon = make_pagerd([POLICY], {"api": "oncall"}, mqtt={"max_message_bytes": 1024})
    await daemon.start()

    answer = await reject(monitor, Bad("alert", "api", b"y" * 1025, r"1025 bytes is over 1024"))
    assert (answer["payload"], answer["size"]) == ("", 1025)

    padded = json.dumps({"message": "just fits"}).encode().ljust(1024)
    await monitor.publish("alert", "api", padded)
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="page for 1024 bytes")
