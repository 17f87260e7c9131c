"""CONTRACT §6 end to end: monitors publish over a real mosquitto, pagerd runs as a
process, and a real HTTP server stands in for the SMS provider."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import PagerdFactory
from tests.harness import Monitor, Policy, SmsStandIn, eventually, sms, sqlite_rows

TIMEOUT = 0.3
ONE = "+15550000001"
TWO = "+15550000002"
THREE = "+15550000003"


async def quiet(seconds: float = 3 * TIMEOUT) -> None:
    """Let time pass when a test asserts that something does NOT happen.

    Absence cannot be polled for; a few ack timeouts is long enough for any page
    the daemon would send by mistake.
    """
    await asyncio.sleep(seconds)


def last_state(monitor: Monitor, service: str = "api") -> dict[str, Any]:
    """The latest retained state pagerd published for the service ({} before any)."""
    states = monitor.on(f"state/{service}")
    return states[-1] if states else {}


def two_levels(repeat: int = 0) -> Policy:
    return Policy("oncall", [(TIMEOUT, [sms(ONE)]), (TIMEOUT, [sms(TWO), sms(THREE)])], repeat)


async def test_alert_pages_level_one_then_escalates_to_level_two(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a healthy service, when an alert arrives and nobody acks,
    then level 1 is paged at once, and level 2 after the timeout, each target once."""
    daemon = make_pagerd([two_levels()], {"api": "oncall"})
    await daemon.start()

    await monitor.publish("alert", "api", {"message": "5xx rate 12%"})
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")
    assert sms_service.to(TWO) == []
    assert "5xx rate 12%" in sms_service.to(ONE)[0].message
    await eventually(lambda: any(s["health"] == "unhealthy" for s in monitor.on("state/api")))

    await eventually(
        lambda: len(sms_service.to(TWO)) == len(sms_service.to(THREE)) == 1, what="level 2 pages"
    )
    await quiet()
    # After the last level (repeat 0): nothing more, the incident stays open.
    assert [len(sms_service.to(n)) for n in (ONE, TWO, THREE)] == [1, 1, 1]
    (status,) = sqlite_rows(daemon.db, "SELECT status FROM incidents")
    assert status == ("triggered",)


async def test_ack_stops_escalation(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an open incident at level 1, when it is acknowledged, then no later level is paged."""
    daemon = make_pagerd([two_levels()], {"api": "oncall"})
    await daemon.start()
    await monitor.publish("alert", "api", "disk full")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")

    await monitor.publish("ack", "api", {"by": "alice"})
    await eventually(
        lambda: any(s["status"] == "acknowledged" for s in monitor.on("state/api")), what="ack"
    )
    await quiet()
    assert sms_service.to(TWO) == []
    # Acknowledged, but still unhealthy until a healthy event.
    assert last_state(monitor)["health"] == "unhealthy"


async def test_alert_on_unhealthy_service_pages_nobody(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an open incident, when more alerts arrive, then they are recorded and page nobody."""
    policy = Policy("slow", [(30.0, [sms(ONE)])])
    daemon = make_pagerd([policy], {"api": "slow"})
    await daemon.start()
    await monitor.publish("alert", "api", {"message": "first", "alert_id": "a1"})
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="first page")

    for alert_id in ("a2", "a3", "a2"):  # a2 twice: recorded once
        await monitor.publish("alert", "api", {"message": "again", "alert_id": alert_id})
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT count(*) FROM alerts")[0][0] == 3,
        what="alerts recorded",
    )
    await quiet()
    assert len(sms_service.pages) == 1
    assert sqlite_rows(daemon.db, "SELECT count(*) FROM incidents") == [(1,)]


async def test_healthy_resolves_and_the_next_alert_opens_a_fresh_incident(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an open incident, when healthy arrives, then it is resolved, its timer never fires,
    and the next alert opens a new incident at level 1."""
    daemon = make_pagerd([two_levels()], {"api": "oncall"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")

    await monitor.publish("healthy", "api", "")
    await eventually(lambda: last_state(monitor).get("health") == "healthy", what="healthy")
    await quiet()
    assert sms_service.to(TWO) == []

    await monitor.publish("alert", "api", "down again")
    await eventually(lambda: len(sms_service.to(ONE)) == 2, what="page for the new incident")
    rows = sqlite_rows(daemon.db, "SELECT status, level_index FROM incidents ORDER BY opened_at")
    assert rows == [("resolved", 0), ("triggered", 0)]


async def test_ack_naming_an_earlier_incident_does_not_ack_the_open_one(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a resolved incident A and an open incident B, when an ack names A,
    then B stays triggered and escalates."""
    daemon = make_pagerd([two_levels()], {"api": "oncall"})
    await daemon.start()
    await monitor.publish("alert", "api", "one")
    await eventually(lambda: last_state(monitor).get("incident_id") is not None, what="A")
    first = last_state(monitor)["incident_id"]
    await monitor.publish("healthy", "api", "")
    await monitor.publish("alert", "api", "two")
    await eventually(lambda: len(sms_service.to(ONE)) == 2, what="page for B")

    await monitor.publish("ack", "api", {"incident_id": first})
    await eventually(lambda: len(sms_service.to(TWO)) == 1, what="B escalates to level 2")
    assert all(s["status"] != "acknowledged" for s in monitor.on("state/api"))


async def test_simultaneous_alerts_page_each_target_once(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a healthy service, when 20 alerts arrive at once, then each target is paged once;
    a target listed twice in a level is paged once too."""
    policy = Policy("dup", [(30.0, [sms(ONE), sms(TWO), sms(ONE)])])
    daemon = make_pagerd([policy], {"api": "dup"})
    await daemon.start()
    await asyncio.gather(*(monitor.publish("alert", "api", f"burst {i}") for i in range(20)))
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT count(*) FROM alerts")[0][0] == 20,
        what="all alerts recorded",
    )
    await eventually(lambda: len(sms_service.pages) == 2, what="two pages")
    await quiet()
    assert sorted(p.phone_number for p in sms_service.pages) == [ONE, TWO]


async def test_repeat_restarts_from_level_one_then_stops(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given repeat = 1, when nobody acks, then the levels are walked twice, then nothing more."""
    daemon = make_pagerd([two_levels(repeat=1)], {"api": "oncall"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.to(TWO)) == 2, timeout=5, what="second round")
    await quiet()
    assert len(sms_service.to(ONE)) == 2
    assert len(sms_service.to(TWO)) == 2


async def test_policy_edit_takes_effect_from_the_next_step(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an incident at level 1 of a two-level policy, when the policy is edited to one
    level (here: config changed across a restart), then the timeout counts as after the
    last level: nothing more is paged, and the incident stays open."""
    timeout = 1.0
    daemon = make_pagerd(
        [Policy("p", [(timeout, [sms(ONE)]), (timeout, [sms(TWO)])])], {"api": "p"}
    )
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")
    assert await daemon.stop() == 0

    daemon.policies = [Policy("p", [(timeout, [sms(ONE)])])]
    await daemon.start()
    await quiet(timeout + 3 * TIMEOUT)
    assert sms_service.to(TWO) == []
    assert len(sms_service.to(ONE)) == 1
    assert sqlite_rows(daemon.db, "SELECT status FROM incidents") == [("triggered",)]
    (exhausted,) = [e for e in daemon.log_events() if e["event"] == "timeout.exhausted"]
    assert exhausted["escalation_level"] == 1
    assert exhausted["level"] == "info"


async def test_alerts_published_at_qos_0_are_taken_without_breaking_the_connection(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a monitor publishing at QoS 0 (mosquitto_pub's default), then each alert is
    taken and paged, and pagerd acknowledges none of them: a PUBACK with packet id 0 is
    a protocol error that makes the broker drop the connection."""
    daemon = make_pagerd([two_levels()], {"api": "oncall", "db": "oncall"})
    await daemon.start()

    await monitor.publish("alert", "api", "down", qos=0)
    await monitor.publish("alert", "db", "down", qos=0)
    await eventually(lambda: len(sms_service.to(ONE)) == 2, what="both level 1 pages")
    await monitor.publish("alert", "api", "still down")  # QoS 1, on the same connection
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT count(*) FROM alerts") == [(3,)], what="3 alerts"
    )
    events = [e["event"] for e in daemon.log_events()]
    assert events.count("mqtt.subscribed") == 1, events
    assert "mqtt.disconnected" not in events


async def test_each_timeline_event_is_published_on_the_events_topic(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an incident that is paged, acknowledged and resolved, then events/{service}
    carries each of its timeline events once, in order, as the database records them."""
    daemon = make_pagerd([two_levels()], {"api": "oncall"})
    await daemon.start()
    await monitor.publish("alert", "api", "disk full")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")
    # The page's outcome is committed after the provider answers: wait for it, so the
    # order of the next events is the test's.
    await eventually(lambda: len(monitor.on("events/api")) >= 2, what="notification.sent")
    await monitor.publish("ack", "api", {"by": "alice"})
    await monitor.publish("healthy", "api", b"")
    await eventually(lambda: len(monitor.on("events/api")) >= 4, what="four events")

    events = monitor.on("events/api")
    rows = sqlite_rows(daemon.db, "SELECT type, incident_id, service_id FROM timeline ORDER BY seq")
    assert [(e["type"], e["incident_id"], e["service_id"]) for e in events] == rows
    assert [e["type"] for e in events] == [
        "incident.triggered",
        "notification.sent",
        "incident.acknowledged",
        "incident.resolved",
    ]
    assert events[0]["detail"] == {"message": "disk full", "level": 1}
    assert events[2]["detail"]["by"] == "alice"
    assert all(e["at"].endswith("Z") for e in events)
