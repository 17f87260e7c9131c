"""CONTRACT §5's paging rules end to end, as issue #13 found them broken: a flapping
service's new incident paged late, pages held behind a bundle, pages sent after their
incident was resolved, and holds nobody could see. A real pagerd, mosquitto and SMS
stand-in each time."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.conftest import PagerdFactory
from tests.harness import Monitor, Policy, SmsStandIn, eventually, sms, sqlite_rows

ONE = "+15550000001"
TWO = "+15550000002"
THREE = "+15550000003"


def timeline(db: Any, kind: str) -> list[dict[str, Any]]:
    rows = sqlite_rows(db, "SELECT detail FROM timeline WHERE type = ? ORDER BY seq", kind)
    return [json.loads(detail) for (detail,) in rows]


def statuses(db: Any) -> list[tuple[str, str]]:
    return sqlite_rows(db, "SELECT service_id, status FROM outbox ORDER BY created_at, rowid")


def escalating(first_timeout: float) -> Policy:
    """Level 1 pages ONE, level 2 (after ``first_timeout``) pages TWO."""
    return Policy("p", [(first_timeout, [sms(ONE)]), (60.0, [sms(TWO)])])


async def test_a_flapping_service_pages_each_new_incident_at_once(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the default 30 s bundle window, when a service alerts, turns healthy and
    alerts again, then the second incident's level 1 goes at once (it is the person's
    second page of the window, not a storm), and its level 2 follows on time, after it."""
    daemon = make_pagerd([escalating(1.0)], {"api": "p"}, notify={"bundle_window_s": 30})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="first incident's page")
    await monitor.publish("healthy", "api", "")
    await eventually(lambda: len(timeline(daemon.db, "incident.resolved")) == 1, what="resolved")

    flapped = time.monotonic()
    await monitor.publish("alert", "api", "down again")
    await eventually(lambda: len(sms_service.to(ONE)) == 2, what="second incident's level 1")
    assert sms_service.to(ONE)[1].at - flapped < 1.0, "the new incident's page must not wait"
    await eventually(lambda: len(sms_service.to(TWO)) == 1, what="second incident's level 2")
    level_2 = sms_service.to(TWO)[0]
    assert level_2.at > sms_service.to(ONE)[1].at
    assert level_2.at - flapped < 3.0, "level 2 comes at its timeout, not after a window"
    assert timeline(daemon.db, "notification.held") == []


async def test_a_later_level_never_waits_on_a_held_page(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a storm to ONE (one page a window), when a held incident's level times out,
    then its level 2 goes at once; the held page shows when it will go, in the timeline,
    the API, the log and the metrics."""
    policies = [
        Policy("pa", [(0.5, [sms(ONE)]), (60.0, [sms(TWO)])]),
        Policy("pb", [(0.5, [sms(ONE)]), (60.0, [sms(THREE)])]),
    ]
    daemon = make_pagerd(
        policies, {"a": "pa", "b": "pb"}, notify={"bundle_window_s": 30, "bundle_after": 1}
    )
    await daemon.start()
    await monitor.publish("alert", "a", "a down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="a's page")
    alerted = time.monotonic()
    await monitor.publish("alert", "b", "b down")
    await eventually(lambda: len(timeline(daemon.db, "notification.held")) == 1, what="b held")

    await eventually(lambda: len(sms_service.to(THREE)) == 1, timeout=5, what="b's level 2")
    assert sms_service.to(THREE)[0].at - alerted < 3.0
    assert len(sms_service.to(ONE)) == 1, "b's level 1 is still held"

    (held,) = timeline(daemon.db, "notification.held")
    assert held["until"].endswith("Z")
    assert ("b", "held") in statuses(daemon.db)
    events = [e for e in daemon.log_events() if e.get("event") == "notification.held"]
    assert [(e["service_id"], e["until"]) for e in events] == [("b", held["until"])]
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.base_url}/metrics") as got:
        text = await got.text()
    assert 'pagerd_notifications_total{channel="sms",outcome="held"} 1.0' in text


async def test_a_held_page_whose_incident_is_resolved_is_never_sent(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given b's page held in ONE's window, when b is resolved and c acknowledged before the
    window ends, then neither is ever sent, each is cancelled with its reason, and the
    window's end sends nothing: a bundle lists only what is open and unacknowledged."""
    window = 1.5
    daemon = make_pagerd(
        [escalating(60.0)],
        {"a": "p", "b": "p", "c": "p"},
        notify={"bundle_window_s": window, "bundle_after": 1},
    )
    await daemon.start()
    for service in ("a", "b", "c"):
        await monitor.publish("alert", service, f"{service} down")
    await eventually(lambda: len(timeline(daemon.db, "notification.held")) == 2, what="holds")
    await monitor.publish("healthy", "b", "")
    await monitor.publish("ack", "c", "")
    await eventually(lambda: len(timeline(daemon.db, "notification.cancelled")) == 2, what="cut")

    await asyncio.sleep(window + 0.5)  # the window's end passes
    assert [page.message.split(":")[0] for page in sms_service.pages] == ["Service a"]
    assert sorted(c["reason"] for c in timeline(daemon.db, "notification.cancelled")) == [
        "acknowledged",
        "resolved",
    ]
    assert statuses(daemon.db) == [("a", "sent"), ("b", "cancelled"), ("c", "cancelled")]


async def test_the_bundle_lists_only_incidents_still_open_and_unacknowledged(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given three pages held in ONE's window, when one incident is acknowledged, then the
    window's end sends one bundle of the other two."""
    daemon = make_pagerd(
        [escalating(60.0)],
        dict.fromkeys(("a", "b", "c", "d"), "p"),
        notify={"bundle_window_s": 1.5, "bundle_after": 1},
    )
    await daemon.start()
    for service in ("a", "b", "c", "d"):
        await monitor.publish("alert", service, f"{service} down")
    await eventually(lambda: len(timeline(daemon.db, "notification.held")) == 3, what="holds")
    await monitor.publish("ack", "c", "")

    await eventually(lambda: len(sms_service.to(ONE)) == 2, timeout=4, what="the bundle")
    bundle = sms_service.to(ONE)[1].message
    assert bundle.startswith("pagerd: 2 more incidents:")
    assert "Service b" in bundle
    assert "Service d" in bundle
    assert "Service c" not in bundle


async def test_retries_stop_when_the_incident_is_resolved(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service answering 503 (retry in 1 s), when the incident is resolved
    between two attempts, then no attempt follows and the page is cancelled."""
    sms_service.statuses = [503] * 10
    sms_service.retry_after = "1"
    daemon = make_pagerd([escalating(60.0)], {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(timeline(daemon.db, "notification.retrying")) == 1, what="503")
    await monitor.publish("healthy", "api", "")
    await eventually(lambda: statuses(daemon.db) == [("api", "cancelled")], what="cancelled")

    await asyncio.sleep(1.5)  # past the retry that was due
    assert len(sms_service.pages) == 1
    (cancelled,) = timeline(daemon.db, "notification.cancelled")
    assert cancelled["reason"] == "resolved"


async def test_a_page_in_flight_when_its_incident_is_acknowledged_is_not_retried(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an attempt in flight, when the incident is acknowledged and then the attempt
    fails with 503, then it is not tried again: cancelled, with its one attempt."""
    sms_service.delays = [1.0]
    sms_service.statuses = [503] * 10
    sms_service.retry_after = "1"
    daemon = make_pagerd([escalating(60.0)], {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.pages) == 1, what="the attempt arrives")
    await monitor.publish("ack", "api", "")
    await eventually(lambda: statuses(daemon.db) == [("api", "cancelled")], what="cancelled")

    await asyncio.sleep(1.5)
    assert len(sms_service.pages) == 1
    assert sqlite_rows(daemon.db, "SELECT attempts FROM outbox") == [(1,)]
